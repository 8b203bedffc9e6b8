"""The OpenAPI part for the browser sign-in of the operator pages (web/auth.py)."""
from __future__ import annotations

from typing import Any

from web.openapi_schema import obj, operation, response, string


def access_paths() -> dict[str, Any]:
    """The browser sign-in for the operator pages (web/auth.py); API clients send a Bearer token instead."""
    page = response("The sign-in form", string(), media_type="text/html")
    form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": obj(
        {"token": string("An API token"), "next": string("Where to go afterwards (a path on this server)")})}}}
    redirect = response("Signed in: the parley_token cookie (HttpOnly, SameSite=Strict) is set; redirect to `next`",
                        headers={"Location": {"schema": string()}})
    return {
        "/auth/login": {
            "get": operation("admin", "login_form", "The sign-in form for the dashboard", {"200": page}),
            "post": operation("admin", "login", "Sign in with an API token", {
                "303": redirect, "400": response("No token given", string(), media_type="text/html"),
                "401": response("Unknown or revoked token", string(), media_type="text/html")},
                request_body=form),
        },
        "/auth/logout": {"post": operation("admin", "logout", "Sign out (clears the cookie)", {
            "303": response("Signed out; redirect to the sign-in form", headers={"Location": {"schema": string()}})})},
    }
