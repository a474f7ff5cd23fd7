"""The management UI at ``/ui/`` (DESIGN §12): server-rendered pages on the admin surface."""
