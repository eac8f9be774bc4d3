"""``python -m complaintflow``: the same as the ``complaintflow`` command."""

from complaintflow.cli import main

if __name__ == "__main__":
    main(prog_name="complaintflow")
