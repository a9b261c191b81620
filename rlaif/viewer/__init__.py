"""The spot-check viewer and the label commands around it (issue #4)."""
