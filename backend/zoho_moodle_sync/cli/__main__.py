"""`python -m zoho_moodle_sync.cli`."""

from zoho_moodle_sync.cli import main

main()
