"""What people see: summaries, the terminal (status, validation, live progress), the report."""
