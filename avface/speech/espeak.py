"""Speech synthesis with espeak-ng, with phoneme timings from libespeak-ng's own phoneme events (ctypes).

The library is driven in synchronous mode with phoneme events on (``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS,
0, None, PHONEME_EVENTS)``, ``espeak_SetSynthCallback``): every callback brings
16-bit samples and a list of events; a phoneme event (type 7) carries the phoneme mnemonic (espeak's ASCII
phoneme names, e.g. ``p``, ``@``, ``aI``, ``_:``) and the sample index where it starts. A phoneme ends where the
next one starts (the last one at the end of the audio). There is deliberately no fallback to parsing
``espeak-ng -x`` output: if the library cannot be loaded, :class:`EspeakError` says how to install it.

libespeak-ng keeps global state and is not thread safe; calls are serialised by a process-wide lock (Ray tasks
run in separate processes, so they do not contend).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from dataclasses import asdict, dataclass, field
from math import gcd

import numpy as np

__all__ = ["EspeakError", "Phoneme", "Word", "Utterance", "synthesize", "espeak_version", "espeak_sample_rate"]

# speak_lib.h (espeak-ng 1.51)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EV_LIST_TERMINATED, _EV_WORD, _EV_SENTENCE, _EV_END, _EV_MSG_TERMINATED, _EV_PHONEME = 0, 1, 2, 5, 6, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_WORDGAP = 1, 2, 3, 4, 7


class EspeakError(RuntimeError):
    """libespeak-ng is missing or failed."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    """One phoneme: espeak ASCII mnemonic, start/end in seconds from the start of the audio, index of its word
    (-1 for pauses before the first word)."""

    symbol: str
    start: float
    end: float
    word: int = -1


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass
class Utterance:
    """Synthesised speech: ``audio (N,) float32`` mono at ``sample_rate`` with its phoneme and word timings."""

    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    audio: np.ndarray
    sample_rate: int
    phonemes: list[Phoneme] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def phonemes_json(self) -> str:
        """Phonemes as a JSON string with millisecond times: ``[{"symbol", "start_ms", "end_ms", "word"}, ...]``."""
        return json.dumps(
            [{"symbol": p.symbol, "start_ms": round(p.start * 1000, 3), "end_ms": round(p.end * 1000, 3),
              "word": p.word} for p in self.phonemes]
        )

    def meta(self) -> dict:
        return {"text": self.text, "voice": self.voice, "rate": self.rate, "pitch": self.pitch,
                "pitch_range": self.pitch_range, "sample_rate": self.sample_rate,
                "words": [asdict(w) for w in self.words]}


def phonemes_from_json(text: str) -> list[Phoneme]:
    """Inverse of :meth:`Utterance.phonemes_json`."""
    return [Phoneme(d["symbol"], d["start_ms"] / 1000.0, d["end_ms"] / 1000.0, d.get("word", -1))
            for d in json.loads(text)]


class _Espeak:
    """The process-wide libespeak-ng handle."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise EspeakError(
                f"cannot load libespeak-ng ({name}): {e}. Install it: apt-get install espeak-ng libespeak-ng1"
            ) from e
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                 _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({self.sample_rate}); is espeak-ng-data installed?")
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, object]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: ctypes callbacks must outlive their use
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_synth(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while True:
            ev = events[i]
            if ev.type == _EV_LIST_TERMINATED:
                break
            if ev.type == _EV_PHONEME:
                self._events.append((ev.type, ev.sample, ev.text_position, ev.id.string.decode("ascii", "replace")))
            elif ev.type == _EV_WORD:
                self._events.append((ev.type, ev.sample, ev.text_position, ev.length))
            elif ev.type in (_EV_SENTENCE, _EV_END, _EV_MSG_TERMINATED):
                self._events.append((ev.type, ev.sample, ev.text_position, None))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, word_gap: int):
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r} (try 'en', 'en-us', 'en+f3', 'en-us+m3')")
        for param, value in ((_P_RATE, rate), (_P_PITCH, pitch), (_P_RANGE, pitch_range), (_P_WORDGAP, word_gap),
                             (_P_VOLUME, 100)):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with code {err} for text {text!r}")
        lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
        return _ENGINE


class _Zygote:
    """A helper process holding a freshly initialised engine that forks one child per request.

    The zygote (``python -m avface.speech._zygote``) is single threaded, so forking it is safe; the child
    synthesises and writes the result to the shared stdout pipe while the zygote waits for it. Requests are one
    JSON line; a response is an 8-byte little-endian header length, a JSON header and the raw int16 samples.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "avface.speech._zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0)
        self.lock = threading.Lock()

    def request(self, **kwargs):
        with self.lock:
            if self.proc.poll() is not None:
                raise EspeakError(f"espeak zygote process exited with code {self.proc.returncode}")
            try:
                self.proc.stdin.write((json.dumps(kwargs) + "\n").encode())
                self.proc.stdin.flush()
                n = int.from_bytes(_read_exact(self.proc.stdout, 8), "little")
                header = json.loads(_read_exact(self.proc.stdout, n))
                pcm = np.frombuffer(_read_exact(self.proc.stdout, 2 * header.get("n_samples", 0)), "<i2")
            except (OSError, EOFError) as e:
                raise EspeakError(f"lost the espeak zygote process: {e}") from e
        if header.get("error"):
            raise EspeakError(header["error"])
        return pcm.copy(), [tuple(e) for e in header["events"]], int(header["sample_rate"])


def _read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"expected {n} bytes, got {len(buf)}")
        buf += chunk
    return bytes(buf)


def _serve_zygote(stdin, stdout) -> None:
    """The zygote's loop (see :class:`_Zygote`)."""
    import os

    try:
        eng = _engine()
        init_error = None
    except EspeakError as e:
        eng, init_error = None, str(e)
    for line in stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # child: synthesise from the pristine state, reply, exit without cleanup
            code = 0
            try:
                if init_error:
                    raise EspeakError(init_error)
                pcm, events = eng.synth(**req)
                header = {"sample_rate": eng.sample_rate, "n_samples": len(pcm),
                          "events": [list(e) for e in events]}
                payload = pcm.astype("<i2").tobytes()
            except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
                header, payload, code = {"error": f"{type(e).__name__}: {e}", "n_samples": 0}, b"", 1
            data = json.dumps(header).encode()
            stdout.write(len(data).to_bytes(8, "little") + data + payload)
            stdout.flush()
            os._exit(code)
        os.waitpid(pid, 0)


_ZYGOTE: _Zygote | None = None


def _synth_isolated(text, voice, rate, pitch, pitch_range, word_gap):
    global _ZYGOTE
    with _ENGINE_LOCK:
        if _ZYGOTE is None or _ZYGOTE.proc.poll() is not None:
            _ZYGOTE = _Zygote()
        zygote = _ZYGOTE
    return zygote.request(text=text, voice=voice, rate=int(rate), pitch=int(pitch), pitch_range=int(pitch_range),
                          word_gap=int(word_gap))


def espeak_version() -> str:
    return _engine().version


def espeak_sample_rate() -> int:
    """The library's native output rate (22050 Hz for espeak-ng's own voices)."""
    return _engine().sample_rate


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    pitch_range: int = 50,
    word_gap: int = 0,
    sample_rate: int = 16000,
    deterministic: bool = True,
) -> Utterance:
    """Speak ``text`` with espeak-ng -> :class:`Utterance` (audio resampled to ``sample_rate``, float32 in [-1, 1]).

    ``voice`` is an espeak voice name with an optional variant (``en``, ``en-us``, ``en+f3``, ``en-us+m3``);
    ``rate`` in words per minute (80-450), ``pitch`` and ``pitch_range`` 0-100, ``word_gap`` in units of 10 ms.
    Phoneme times come from the library's phoneme events (sample-accurate at the native rate).

    libespeak-ng keeps generator state across calls in C statics (pitch flutter index, glottal phase), so the
    same request gives slightly different audio depending on what the process said before. With
    ``deterministic=True`` (default) every call runs in a fresh process forked from a pristine, initialised
    engine (a zygote process started once per process, then one fork per call, a few ms), so the output depends
    only on the arguments.
    ``deterministic=False`` synthesises in this process (faster, history-dependent).
    """
    if not text.strip():
        raise ValueError("nothing to say: empty text")
    if deterministic:
        pcm, events, native = _synth_isolated(text, voice, rate, pitch, pitch_range, word_gap)
    else:
        eng = _engine()
        with eng.lock:
            pcm, events = eng.synth(text, voice, rate, pitch, pitch_range, word_gap)
        native = eng.sample_rate
    if len(pcm) == 0:
        raise EspeakError(f"espeak-ng produced no audio for {text!r} (voice {voice!r})")
    audio = pcm.astype(np.float32) / 32768.0
    if sample_rate != native:
        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), native)
        audio = resample_poly(audio, int(sample_rate) // g, native // g).astype(np.float32)
    audio = np.clip(audio, -1.0, 1.0)
    duration = len(audio) / sample_rate

    # words: text span -> start sample; phonemes: symbol -> start sample, attributed to the current word
    phon: list[tuple[str, float, int]] = []
    words: list[tuple[str, float]] = []
    word_idx = -1
    for etype, sample, text_pos, extra in events:
        t = sample / native
        if etype == _EV_WORD:
            start = max(int(text_pos) - 1, 0)  # text_position is 1-based, in characters
            words.append((text[start : start + int(extra)], t))
            word_idx = len(words) - 1
        elif etype == _EV_PHONEME and extra:
            phon.append((str(extra), t, word_idx))
    if not phon:
        raise EspeakError(f"espeak-ng sent no phoneme events for {text!r}; phoneme events not enabled?")
    phon.sort(key=lambda p: p[1])
    phonemes = []
    for i, (sym, t, w) in enumerate(phon):
        end = phon[i + 1][1] if i + 1 < len(phon) else duration
        phonemes.append(Phoneme(sym, float(min(t, duration)), float(min(max(end, t), duration)), w))
    # the lead-in before the first phoneme is silence
    if phonemes[0].start > 0:
        phonemes.insert(0, Phoneme("_", 0.0, phonemes[0].start, -1))
    if phonemes[-1].end < duration:
        phonemes.append(Phoneme("_", phonemes[-1].end, duration, -1))
    word_list = []
    for i, (wtext, t) in enumerate(words):
        ends = [p.end for p in phonemes if p.word == i and not p.symbol.startswith("_")]
        word_list.append(Word(wtext, float(t), float(max(ends)) if ends else float(t)))
    return Utterance(text=text, voice=voice, rate=int(rate), pitch=int(pitch), pitch_range=int(pitch_range),
                     audio=audio, sample_rate=int(sample_rate), phonemes=phonemes, words=word_list)
