"""complaintflow."""
