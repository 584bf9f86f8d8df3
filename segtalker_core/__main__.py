"""``python -m segtalker_core``: the command line (:mod:`.cli`); its exit code is the process's."""
import sys

from .cli import main

if __name__ == "__main__":  # importing this module (pydoc, test discovery) must not run a command
    sys.exit(main())
