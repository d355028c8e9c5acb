"""Test-time sliding windows (paper 3.5: windows of ``x = 16`` frames, step 1), fast and streaming.

Every frame lies in up to ``W`` windows. The naive way runs both encoders on every window, so each frame's CNN
features are computed ``W`` times. Here the per-frame parts (the coarse ResNet + its DECA-style head, E_v and E_a)
run once per frame (:func:`frame_features`); only the temporal parts (transformers + heads) run per window, batched
(:class:`SlidingWindows`). :func:`naive_codes` is the reference that recomputes every window.

Aggregation rule (``rule``) of the per-frame predictions of the windows that contain a frame:

``mean``    (default) the mean of the frame's predictions over all windows containing it (smooth: a frame's
            prediction never jumps when the window set changes);
``centre``  the prediction of the window in which the frame is closest to position ``(W - 1) // 2`` (the most
            context on both sides; at the ends of the video the first / last window).

Videos shorter than ``W`` frames are one window of all their frames. Codes are aggregated before decoding: the
coarse code ``c`` (183) and ``e`` (expression 50 + jaw 3) per frame.

Streaming: :class:`SlidingWindows` takes per-frame features chunk by chunk and hands back every frame whose
windows are all computed; it holds at most ``chunk + W`` frames, so memory does not grow with the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

RULES = ("mean", "centre")


@dataclass
class FrameFeatures:
    """Per-frame (cached) features of ``T`` frames: ``coarse (T, 183)`` embeddings of E_c, ``expression (T, D)`` the
    concatenated ``[f_a | f_v]`` of the expression-jaw branch."""

    coarse: torch.Tensor
    expression: torch.Tensor


@torch.no_grad()
def frame_features(model: torch.nn.Module, images: torch.Tensor, audio: torch.Tensor | None,
                   batch_size: int = 32, points: torch.Tensor | None = None,
                   points_valid: torch.Tensor | None = None) -> FrameFeatures:
    """The per-frame parts of both encoders, ``batch_size`` frames at a time.

    Args:
        model: an :class:`avface.models.avface.AVFace` in eval mode.
        images: (T, 3, H, W) crops in [0, 1].
        audio: (T, 16, F) audio windows, or None (video-only: the zero audio embedding).
        points: (T, P, 3) the detector's points in the crops' pixels (a model with ``landmark_input``; others
            ignore them), ``points_valid`` (T,) bool; None: no detection (the zero landmark embedding).
    """
    coarse, expr = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size][None]
        a = None if audio is None else audio[i:i + batch_size][None]
        p = None if points is None else points[i:i + batch_size][None]
        pv = None if points_valid is None or points is None else points_valid[i:i + batch_size][None]
        coarse.append(model.coarse.embed(x, p, pv)[0])
        expr.append(model.expression.frame_features(x, a, points=p, points_valid=pv)[0][0])
    return FrameFeatures(torch.cat(coarse), torch.cat(expr))


@torch.no_grad()
def window_codes(model: torch.nn.Module, coarse: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """Temporal parts on a batch of windows: ``coarse (N, W, 183)``, ``expression (N, W, D)`` -> codes
    ``(N, W, 183 + 53)`` = coarse code c then expression | jaw."""
    c = model.coarse.code_from_embeddings(coarse).raw
    ex, jaw = model.expression.code_from_features(expression)
    return torch.cat([c, ex, jaw], dim=-1)


@dataclass
class _Accumulator:
    """Aggregation state of frames ``[start, start + len)``: sums and counts (mean) or best values (centre)."""

    rule: str
    window: int
    start: int = 0
    value: torch.Tensor | None = None  # (L, C)
    weight: torch.Tensor | None = None  # (L,) counts (mean) or best distance to the centre (centre)

    def _grow(self, stop: int, like: torch.Tensor) -> None:
        n = stop - self.start
        if self.value is None:
            self.value = like.new_zeros(0, like.shape[-1])
            self.weight = like.new_zeros(0)
        if n > len(self.value):
            extra = n - len(self.value)
            self.value = torch.cat([self.value, like.new_zeros(extra, like.shape[-1])])
            fill = 0.0 if self.rule == "mean" else float("inf")
            self.weight = torch.cat([self.weight, like.new_full((extra,), fill)])

    def add(self, starts: torch.Tensor, codes: torch.Tensor) -> None:
        """Add window predictions ``codes (N, W', C)`` of windows starting at frames ``starts (N,)``."""
        n, w, c = codes.shape
        starts = starts.to(codes.device)
        frames = (starts[:, None] + torch.arange(w, device=starts.device)[None]).reshape(-1) - self.start
        flat = codes.reshape(-1, c)
        self._grow(self.start + int(frames.max()) + 1, flat)
        if self.rule == "mean":
            self.value.index_add_(0, frames, flat)
            self.weight.index_add_(0, frames, torch.ones_like(frames, dtype=flat.dtype))
            return
        centre = (self.window - 1) // 2
        dist = (torch.arange(w, device=flat.device) - centre).abs().to(flat.dtype).repeat(n)
        # The windows containing a frame have contiguous starts, so the closest position to the centre is unique.
        best = self.weight.clone().scatter_reduce_(0, frames, dist, "amin")
        sel = (dist == best[frames]) & (dist < self.weight[frames])
        self.value[frames[sel]] = flat[sel]
        self.weight = best

    def pop(self, stop: int) -> torch.Tensor:
        """Aggregated values of frames ``[start, stop)``; they leave the accumulator."""
        k = stop - self.start
        if k <= 0:
            return self.value.new_zeros(0, self.value.shape[-1]) if self.value is not None else torch.zeros(0, 0)
        val, wt = self.value[:k], self.weight[:k]
        out = val / wt[:, None] if self.rule == "mean" else val.clone()
        self.value, self.weight = self.value[k:], self.weight[k:]
        self.start = stop
        return out


@dataclass
class SlidingWindows:
    """Streaming sliding-window inference over cached per-frame features.

    ``push(features, payload)`` appends the features of the next frames (and per-frame tensors to hand back with
    them, e.g. audio windows or crops); it returns the frames that became final as ``(first_frame, codes (K, 236),
    payload)``, or None. :meth:`finish` flushes the rest at the end of the stream.
    """

    model: torch.nn.Module
    window: int = 16
    batch_size: int = 64  # windows per transformer call
    rule: str = "mean"
    _coarse: list[torch.Tensor] = field(default_factory=list)
    _expr: list[torch.Tensor] = field(default_factory=list)
    _payload: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _buf_start: int = 0  # frame index of the first buffered feature row
    _n: int = 0  # frames pushed
    _next_start: int = 0  # first window start not computed yet
    _acc: _Accumulator | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown aggregation rule {self.rule!r}; choose one of {RULES}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self._acc = _Accumulator(self.rule, self.window)

    @property
    def frames_pushed(self) -> int:
        return self._n

    def _buffer(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self._coarse) > 1:
            self._coarse = [torch.cat(self._coarse)]
            self._expr = [torch.cat(self._expr)]
        return self._coarse[0], self._expr[0]

    def _run_windows(self, stop_start: int, window: int) -> None:
        """Compute windows starting at ``[_next_start, stop_start]`` of length ``window``."""
        coarse, expr = self._buffer()
        dev = coarse.device
        starts = torch.arange(self._next_start, stop_start + 1, device=dev)
        idx = starts[:, None] - self._buf_start + torch.arange(window, device=dev)[None]
        for i in range(0, len(starts), self.batch_size):
            sl = idx[i:i + self.batch_size]
            codes = window_codes(self.model, coarse[sl], expr[sl])
            self._acc.add(starts[i:i + self.batch_size], codes)
        self._next_start = stop_start + 1

    def _emit(self, stop: int) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]] | None:
        first = self._acc.start
        if stop <= first:
            return None
        codes = self._acc.pop(stop)
        # features and payload before the next window start are no longer needed
        keep_from = min(self._next_start, stop)
        drop = keep_from - self._buf_start
        coarse, expr = self._buffer()
        self._coarse, self._expr = [coarse[drop:]], [expr[drop:]]
        payload: dict[str, torch.Tensor] = {}
        for k, parts in self._payload.items():
            full = torch.cat(parts) if len(parts) > 1 else parts[0]
            payload[k] = full[first - self._buf_start: stop - self._buf_start]
            self._payload[k] = [full[drop:]]
        self._buf_start = keep_from
        return first, codes, payload

    def push(self, features: FrameFeatures, payload: dict[str, torch.Tensor] | None = None
             ) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]] | None:
        t = len(features.coarse)
        self._coarse.append(features.coarse)
        self._expr.append(features.expression)
        for k, v in (payload or {}).items():
            if len(v) != t:
                raise ValueError(f"payload {k!r} has {len(v)} rows for {t} frames")
            self._payload.setdefault(k, []).append(v)
        self._n += t
        last_start = self._n - self.window
        if last_start < self._next_start:
            return None
        self._run_windows(last_start, self.window)
        # frame f is final once every window starting at <= f is computed
        return self._emit(self._next_start)

    def finish(self) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]] | None:
        if self._n == 0:
            return None
        if self._n < self.window:  # a short video is one window of all its frames
            self._run_windows(0, self._n)
        return self._emit(self._n)


def _collect(parts: list[tuple[int, torch.Tensor, dict]]) -> torch.Tensor:
    parts = [p for p in parts if p is not None]
    return torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, 0)


@torch.no_grad()
def cached_codes(model: torch.nn.Module, images: torch.Tensor, audio: torch.Tensor | None, window: int = 16,
                 rule: str = "mean", batch_size: int = 32, chunk: int = 256, window_batch: int = 128,
                 points: torch.Tensor | None = None, points_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame aggregated codes ``(T, 236)`` with cached per-frame features, streamed in chunks of ``chunk``
    frames (the streaming path of :class:`avface.inference.Reconstructor`, without decoding); ``batch_size`` frames
    per CNN call, ``window_batch`` windows per transformer call."""
    sw = SlidingWindows(model, window, batch_size=max(window_batch, 1), rule=rule)
    parts = []
    for i in range(0, len(images), chunk):
        a = None if audio is None else audio[i:i + chunk]
        p = None if points is None else points[i:i + chunk]
        pv = None if points_valid is None or points is None else points_valid[i:i + chunk]
        parts.append(sw.push(frame_features(model, images[i:i + chunk], a, batch_size, p, pv)))
    parts.append(sw.finish())
    return _collect(parts)


@torch.no_grad()
def naive_codes(model: torch.nn.Module, images: torch.Tensor, audio: torch.Tensor | None, window: int = 16,
                rule: str = "mean", points: torch.Tensor | None = None,
                points_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: both encoders' full ``forward`` on every window (each frame's CNN features recomputed in every
    window containing it), aggregated with the same ``rule``. ``(T, 236)``."""
    t = len(images)
    w = min(window, t)
    acc = _Accumulator(rule, window)
    for s in range(0, t - w + 1):
        x = images[s:s + w][None]
        a = None if audio is None else audio[s:s + w][None]
        p = None if points is None else points[s:s + w][None]
        pv = None if points_valid is None or points is None else points_valid[s:s + w][None]
        c = model.coarse(x, points=p, points_valid=pv).raw
        ej = model.expression(x, a, points=p, points_valid=pv)
        acc.add(torch.tensor([s]), torch.cat([c, ej.expression, ej.jaw], dim=-1))
    return acc.pop(t)


def split_codes(codes: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``(..., 236)`` aggregated codes -> the named parts of the model's output dict (``shape``, ``albedo``,
    ``light`` (..., 9, 3), ``global_pose``, ``cam``, ``expression``, ``jaw``)."""
    cc = model.coarse.cfg
    ec = model.expression.cfg
    sizes = [cc.n_shape, cc.n_albedo, cc.n_light, 3, 3, ec.n_expression, ec.n_jaw]
    shape, albedo, light, pose, cam, ex, jaw = torch.split(codes, sizes, dim=-1)
    return {"shape": shape, "albedo": albedo, "light": light.reshape(*light.shape[:-1], -1, 3),
            "global_pose": pose, "cam": cam, "expression": ex, "jaw": jaw}
