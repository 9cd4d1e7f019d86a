"""Keeps Moodle LMS in sync with Zoho CRM for colleges."""

__version__ = "0.1.0"
