"""Telling people: webhook and command notifications, and what runs around each pass
(progress view, report, failure notices)."""
