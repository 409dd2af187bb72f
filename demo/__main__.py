"""python -m demo: the same as python -m demo.run (the whole dashboard, as `make run` starts it)."""

import sys

from demo.run import main

if __name__ == "__main__":
    sys.exit(main())
