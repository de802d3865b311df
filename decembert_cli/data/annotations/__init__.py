"""Readers of the official annotation files (../shared/DATA_FORMATS.md), shared by the task families."""
