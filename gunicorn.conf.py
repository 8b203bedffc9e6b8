"""gunicorn settings for Parley's web tier (read from the working directory; the Procfile runs it from here).

Its one job: refuse to listen beyond loopback while no API token exists, and say at start-up which it is.
"""


def on_starting(server):
    from parley.config import get_settings
    from web.auth import OPT_OUT_ENV, bind_refusal, tokens_configured_safely

    configured = tokens_configured_safely()
    opted_out = get_settings().allow_unauthenticated
    refusal = bind_refusal(list(server.cfg.bind), tokens_configured=configured, opted_out=opted_out)
    if refusal:
        raise SystemExit(f"parley: {refusal}")
    if configured:
        server.log.info("parley: API tokens are configured; every request except health and docs needs one")
    elif opted_out:
        server.log.warning("parley: no API token and %s=1: serving %s WITHOUT access control",
                           OPT_OUT_ENV, ", ".join(server.cfg.bind))
    else:
        server.log.info("parley: no API token configured: serving loopback clients only (%s)", ", ".join(server.cfg.bind))

# The longest request line gunicorn accepts (its maximum). The app answers URLs over 4096 bytes with a
# JSON 414 (web.MAX_URL_BYTES); only a line over this gets gunicorn's own plain-text 414.
limit_request_line = 8190
