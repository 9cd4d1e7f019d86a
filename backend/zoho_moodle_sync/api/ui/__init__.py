"""The operator's console at `/ui`: overview, jobs that need a person, parked records, inbound
events and the explanation of any record, behind the admin credential."""

from zoho_moodle_sync.api.ui.routes import install_console

__all__ = ["install_console"]
