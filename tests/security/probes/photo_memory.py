"""Run in a subprocess: `photo_memory.py make KIND PATH` writes a small file that decodes to
some 40 megapixels; `photo_memory.py gate|upload PATH` reads it through the photo gate (or
derives its upload) and prints the time and the peak RSS before and after."""
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from peak_memory import peak_rss_mib
from PIL import Image

WIDTH, HEIGHT = 8000, 5000  # 40 megapixels: the gate's default pixel bound


def make(kind: str, path: Path) -> None:
    rows = np.arange(HEIGHT, dtype=np.uint32)[:, None]
    cols = np.arange(WIDTH, dtype=np.uint32)[None, :]
    if kind == "png16":  # 16-bit grey: Pillow's "I;16"
        import cv2

        grey = ((rows * 7 + cols * 3) % 60000).astype(np.uint16)
        ok, encoded = cv2.imencode(".png", grey)
        assert ok
        path.write_bytes(encoded.tobytes())
    elif kind == "palette":
        Image.fromarray(((rows + cols) % 200).astype(np.uint8)).convert("P").save(path, "PNG")
    elif kind == "rgba":
        rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
        rgba[..., 0] = ((rows + cols) % 256).astype(np.uint8)
        rgba[..., 3] = 128
        Image.fromarray(rgba, "RGBA").save(path, "PNG")
    elif kind == "webp_canvas":  # a 6000x6000 animation canvas drawn by tiny frames
        frames = [Image.new("RGB", (64, 64), (i, 0, 0)) for i in range(50)]
        buffer = io.BytesIO()
        frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
        data = bytearray(buffer.getvalue())
        at = data.index(b"VP8X") + 8
        data[at + 4 : at + 10] = (5999).to_bytes(3, "little") * 2
        path.write_bytes(bytes(data))
    else:
        raise SystemExit(f"unknown kind {kind}")


def main() -> None:
    if sys.argv[1] == "make":
        make(sys.argv[2], Path(sys.argv[3]))
        return
    from pipeline.inputs.photo_checks import PhotoSettings
    from pipeline.inputs.photo_files import Gate, _read_content
    from pipeline.inputs.photo_formats import upload_bytes

    data = Path(sys.argv[2]).read_bytes()
    gate = Gate(PhotoSettings(), faces=True, cache=None, max_pixels=WIDTH * HEIGHT)
    _read_content(photo_warm_up(), "warm.png", gate)  # libraries loaded, once
    before = peak_rss_mib()
    start = time.monotonic()
    if sys.argv[1] == "gate":
        outcome = _read_content(data, "big.png", gate)
        said = getattr(outcome, "reason", None) or f"accepted {outcome.measures.conversions}"
    else:
        said = ", ".join(upload_bytes(data).changes)
    print(json.dumps({"outcome": said, "seconds": round(time.monotonic() - start, 2),
                      "rss_before_mib": round(before), "rss_peak_mib": round(peak_rss_mib())}))


def photo_warm_up() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buffer, "PNG")
    return buffer.getvalue()


main()
