"""Dataset adapters: every source yields :class:`data.records.Record` rows."""

from data.records import Issue, Record

__all__ = ["Issue", "Record"]
