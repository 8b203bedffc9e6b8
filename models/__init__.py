"""Peewee models of Parley's data and the database they live in."""
from models.db import db, init_db, migrate
from models.tables import (ALL_TABLES, AnalysisJob, ApiToken, AnalysisSummary, Chat, Job, JobEvent, LlmJob, LlmSettings, Message, ModelPull, Paragraph, Segment,
                           Session, SessionVoice, Template, UsageLog, VoiceProfile, VoiceSample)

__all__ = ["db", "init_db", "migrate", "ALL_TABLES", "AnalysisJob", "ApiToken", "AnalysisSummary", "Chat", "Job", "JobEvent", "LlmJob", "LlmSettings", "Message",
           "ModelPull", "Paragraph", "Segment", "Session", "SessionVoice", "Template", "UsageLog",
           "VoiceProfile", "VoiceSample"]
