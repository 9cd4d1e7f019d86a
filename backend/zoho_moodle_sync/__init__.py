"""Keeps Moodle LMS in sync with Zoho CRM for colleges."""
