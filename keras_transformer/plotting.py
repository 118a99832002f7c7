"""Attention heatmaps with matplotlib."""

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_attention(weights, source_tokens, target_tokens, path: str,
                   title: str | None = None) -> str:
    """Draws cross-attention weights (T, S) as a heatmap and saves it.

    Source tokens label the x axis, target tokens the y axis.

    Args:
        weights: array (T, S), rows summing to 1.
        source_tokens: list of S str. target_tokens: list of T str.
        path: the image file to write (the format follows the suffix).
        title: optional title.

    Returns:
        `path`.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(
            "`weights` must have shape (len(target_tokens), "
            f"len(source_tokens)) = ({len(target_tokens)}, "
            f"{len(source_tokens)}). Received: weights.shape="
            f"{weights.shape}")
    width = max(4.0, 0.45 * len(source_tokens) + 2)
    height = max(3.0, 0.4 * len(target_tokens) + 1.5)
    figure, axes = plt.subplots(figsize=(width, height))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0,
                        aspect="auto")
    axes.set_xticks(range(len(source_tokens)), source_tokens, rotation=90)
    axes.set_yticks(range(len(target_tokens)), target_tokens)
    axes.set_xlabel("source tokens")
    axes.set_ylabel("target tokens")
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
