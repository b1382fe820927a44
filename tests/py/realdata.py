"""Deterministic natural-looking inputs for third-party models (numpy only; no files, no downloads).

natural_images: 1/f ("pink") noise, whose power spectrum falls off as natural images' do, in three
correlated colour channels, with sharp-edged ellipses and rectangles on top; ImageNet-normalised NCHW.
text_crops / text_page: lines of glyphs drawn from a seeded alphabet of 5×7 bitmaps, upscaled to
stroke width, dark ink on a light textured background (or the reverse), as PaddleOCR's classifier and
recogniser (48 px high crops, (x/255 − 0.5)/0.5) and detector (a page, ImageNet-normalised) expect.
A crop turned by 180° (flip_half) is what the orientation classifier is for.
"""
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def _pink(rng, n, size):
    f = np.fft.fftfreq(size)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    r[0, 0] = 1.0
    spec = (rng.standard_normal((n, size, size)) + 1j * rng.standard_normal((n, size, size))) / r
    img = np.fft.ifft2(spec).real
    img -= img.mean(axis=(1, 2), keepdims=True)
    img /= img.std(axis=(1, 2), keepdims=True) + 1e-8
    return img


def natural_images(n, size=224, seed=0):
    """n images [n, 3, size, size] float32, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    lum = _pink(rng, n, size)
    chroma = _pink(rng, 2 * n, size).reshape(n, 2, size, size)
    mix = rng.uniform(-0.3, 0.3, (n, 3, 2)).astype(np.float32)
    x = 0.5 + 0.18 * lum[:, None] + 0.06 * np.einsum("ncj,njhw->nchw", mix, chroma)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        for _ in range(rng.integers(2, 6)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 16, size / 4, 2)
            if rng.random() < 0.5:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            else:
                mask = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
            colour = rng.uniform(0, 1, 3)
            x[i][:, mask] = 0.6 * colour[:, None] + 0.4 * x[i][:, mask]
    x = np.clip(x, 0, 1).astype(np.float32)
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def _alphabet(rng, count=48):
    glyphs = []
    while len(glyphs) < count:
        g = rng.random((7, 5)) < 0.45
        g[rng.integers(0, 7), :] |= rng.random() < 0.5      # a horizontal stroke
        g[:, rng.integers(0, 5)] |= rng.random() < 0.6      # a vertical stroke
        if g.sum() >= 8:
            glyphs.append(g)
    return glyphs


def _line(rng, glyphs, height, width, scale):
    """One line of text, ink 1 on 0, [height, width]."""
    canvas = np.zeros((height, width), np.float32)
    gh, gw = 7 * scale, 5 * scale
    top = max(0, (height - gh) // 2 + int(rng.integers(-2, 3)))
    x = int(rng.integers(2, 3 * scale))
    end = int(width * rng.uniform(0.55, 0.98))
    while x + gw < end:
        g = glyphs[int(rng.integers(len(glyphs)))]
        block = np.kron(g, np.ones((scale, scale))).astype(np.float32)
        h = min(gh, height - top)
        canvas[top:top + h, x:x + gw] = np.maximum(canvas[top:top + h, x:x + gw], block[:h])
        x += gw + scale + (3 * scale if rng.random() < 0.15 else 0)
    return canvas


def _ink(rng, ink, shape):
    """Ink mask → RGB float in [0, 1]: background texture, ink colour, noise; [3, H, W]."""
    dark_on_light = rng.random() < 0.8
    bg = rng.uniform(0.7, 1.0, 3) if dark_on_light else rng.uniform(0.0, 0.3, 3)
    fg = rng.uniform(0.0, 0.3, 3) if dark_on_light else rng.uniform(0.7, 1.0, 3)
    img = bg[:, None, None] * (1 - ink) + fg[:, None, None] * ink
    img += rng.normal(0, 0.03, (3,) + shape)
    return np.clip(img, 0, 1).astype(np.float32)


def text_crops(n, height=48, width=192, seed=0, flip_half=True):
    """n text-line crops [n, 3, height, width], PaddleOCR-normalised ((x − 0.5) / 0.5); with
    flip_half every other crop is turned by 180° (the classifier's second class)."""
    rng = np.random.default_rng(seed)
    glyphs = _alphabet(rng)
    out = np.empty((n, 3, height, width), np.float32)
    for i in range(n):
        scale = int(rng.integers(3, height // 8 + 1))
        img = _ink(rng, _line(rng, glyphs, height, width, scale), (height, width))
        if flip_half and i % 2:
            img = img[:, ::-1, ::-1]
        out[i] = (img - 0.5) / 0.5
    return out


def text_page(n, height=320, width=320, seed=0):
    """n pages [n, 3, height, width] with several text lines each, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    glyphs = _alphabet(rng)
    out = np.empty((n, 3, height, width), np.float32)
    for i in range(n):
        ink = np.zeros((height, width), np.float32)
        y = int(rng.integers(4, 24))
        while y < height - 24:
            lh = min(int(rng.integers(20, 40)), height - y)
            ink[y:y + lh] = _line(rng, glyphs, lh, width, max(2, lh // 10))
            y += lh + int(rng.integers(6, 30))
        out[i] = _ink(rng, ink, (height, width))
    return ((out - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
