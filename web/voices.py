"""Known voices: make a voice profile from a session's speaker, list, rename and delete profiles."""
from __future__ import annotations

from flask import Blueprint

from services import voices
from web.auth import token_id
from web.declared import INT64_MAX, NONBLANK, Confirmation, Field, OutputModel, WireModel, endpoint
from web.errors import bad_request
from web.sessions import numeric_id

voices_bp = Blueprint("voices", __name__, url_prefix="/api")

PROFILE_ID = {"profile_id": "Voice profile id: a positive integer, as digits"}
BAD_ID = "Voice profile id is not a positive integer"
OWNERSHIP = ("Profiles belong to the API token that made them: a token sees and changes its own only (without "
             "tokens, every profile is the one user's). Recognition names the speakers of a new transcription "
             "after its owner's profiles. A voiceprint is biometric data; see the README's Known voices.")


class VoiceInput(WireModel):
    """Which speaker of which finished session to name."""

    session_id: int = Field(ge=0, le=INT64_MAX, description="A finished session transcribed with speaker labels")
    speaker: str = Field(min_length=1, max_length=voices.NAME_MAX, pattern=NONBLANK,
                         description="The speaker's label as the transcript shows it now (a renamed label works)")
    name: str = Field(min_length=1, max_length=voices.NAME_MAX, pattern=NONBLANK,
                      description="The person's name; an existing profile of this name gets this voice too")


class VoiceRename(WireModel):
    """A profile's new name."""

    name: str = Field(min_length=1, max_length=voices.NAME_MAX, pattern=NONBLANK, description="Trimmed")


class VoiceProfile(OutputModel):
    """A known voice (its voiceprints are never sent)."""

    id: int = Field(ge=1, description="Voice profile id")
    name: str = Field(description="The name recognised speakers are given")
    session_ids: list[int] = Field(description="Sessions whose speaker gave this profile a voiceprint")
    created_at: int = Field(description="Creation time (Unix epoch milliseconds)")

    @classmethod
    def of(cls, profile: voices.Profile) -> VoiceProfile:
        return cls(id=profile.id, name=profile.name, session_ids=profile.session_ids, created_at=profile.created_at_ms)


def _profile_id(value: str) -> int:
    pid = numeric_id(value, "voice profile id")
    if pid < 1:
        raise bad_request(f"voice profile id must be a positive integer, got {value!r}")
    return pid


@voices_bp.post("/voices")
@endpoint(tag="sessions", json=VoiceInput, shared_description=OWNERSHIP, responses={
    201: (VoiceProfile, "The profile, created or with this voice added"),
    400: "Bad body; the session is not finished, has no speakers with voiceprints, or no such speaker",
    404: "Unknown session", 409: "The profile already has another speaker of this session"})
def create_voice(json: VoiceInput):
    """Name a session's speaker, so later sessions recognise the voice

    This is the opt-in: the speaker's voiceprint is copied into the profile named `name` (made if the caller has
    none of that name). Posting another session's speaker with an existing name adds that voice to the profile.
    """
    profile, _ = voices.create_profile(session_id=json.session_id, speaker=json.speaker, name=json.name,
                                       owner_token_id=token_id())
    return VoiceProfile.of(profile), 201


@voices_bp.get("/voices")
@endpoint(tag="sessions", shared_description=OWNERSHIP,
          responses={200: (list[VoiceProfile], "The caller's voice profiles, by id")})
def list_voices():
    """Known voices"""
    return [VoiceProfile.of(p) for p in voices.list_profiles(token_id())]


@voices_bp.patch("/voices/<profile_id>")
@endpoint(tag="sessions", json=VoiceRename, path_parameters=PROFILE_ID, responses={
    200: (VoiceProfile, "The renamed profile"), 400: f"{BAD_ID}; blank or too long name",
    404: "Unknown voice profile", 409: "Another profile of the caller has that name"})
def rename_voice(profile_id: str, json: VoiceRename):
    """Rename a known voice

    Transcripts already labelled keep the old name until `parley voices apply`.
    """
    return VoiceProfile.of(voices.rename_profile(_profile_id(profile_id), json.name, token_id()))


@voices_bp.delete("/voices/<profile_id>")
@endpoint(tag="sessions", path_parameters=PROFILE_ID, responses={
    200: (Confirmation, '"Voice profile <id> deleted with its voiceprints."'), 400: BAD_ID,
    404: "Unknown voice profile"})
def delete_voice(profile_id: str):
    """Delete a known voice and its voiceprints

    Transcripts it labelled keep the name until `parley voices apply --undo`.
    """
    pid = _profile_id(profile_id)
    voices.delete_profile(pid, token_id())
    return Confirmation(message=f"Voice profile {pid} deleted with its voiceprints.")
