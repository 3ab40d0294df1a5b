"""The import worker's main loop (``python -m anymole.io._worker``; started by `anymole.io._isolate`).

Reads ``(function, args)`` pickles from stdin and answers ``(True, result)`` or ``(False, exception)`` on
the original stdout. File descriptor 1 is pointed at stderr first, so that anything native code prints
cannot corrupt the reply stream.
"""

from __future__ import annotations

import os
import pickle
import sys


def main() -> None:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            fn, args = pickle.load(requests)
        except EOFError:  # the parent closed the pipe: shut down quietly
            return
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # every failure is sent back and re-raised in the parent
            reply = (False, exc)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    main()
