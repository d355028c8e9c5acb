"""``python -m avface.speech._zygote``: the espeak fork server (see ``avface.speech.espeak._Zygote``)."""

import sys

from avface.speech.espeak import _serve_zygote

if __name__ == "__main__":
    _serve_zygote(sys.stdin, sys.stdout.buffer)
