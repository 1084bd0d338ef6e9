"""Piano-roll pictures of melodies (PNG bytes), for asset metadata and review queues."""

from __future__ import annotations

import io
from collections.abc import Sequence

from .melody import BEATS_PER_BAR, Melody


def piano_roll_png(melodies: Sequence[Melody], *, titles: Sequence[str] | None = None, width: float = 9.0) -> bytes:
    """One row per melody: notes as bars (velocity as shade), bar lines, chord symbols on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = max(1, len(melodies))
    fig, axes = plt.subplots(n, 1, figsize=(width, 1.9 * n), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[:, 0], melodies)):
        length = max(m.length_beats, BEATS_PER_BAR)
        pitches = m.pitches or [60, 72]
        lo, hi = min(pitches) - 2, max(pitches) + 2
        for note in m.notes:
            shade = 0.35 + 0.65 * note.velocity / 127
            ax.add_patch(Rectangle((note.start, note.pitch - 0.4), note.duration, 0.8, color=(0.85 * shade, 0.25, 0.55 * shade)))
        for b in range(int(length // BEATS_PER_BAR) + 1):
            ax.axvline(b * BEATS_PER_BAR, color="0.75", lw=0.6, zorder=0)
        for c in m.chords:
            ax.text(c.start + 0.1, hi - 0.2, c.symbol + ("?" if c.inferred else ""), fontsize=6, va="top", color="0.3")
        ax.set_xlim(0, length)
        ax.set_ylim(lo, hi + 1.5)
        ax.set_ylabel("MIDI", fontsize=7)
        ax.tick_params(labelsize=6)
        title = titles[i] if titles else f"{m.name}  ({m.key}, {m.bpm:g} BPM, {len(m.notes)} notes)"
        ax.set_title(title, fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("beats", fontsize=7)
    return figure_png(fig)


def figure_png(fig, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
