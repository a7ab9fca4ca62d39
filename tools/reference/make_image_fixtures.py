#!/usr/bin/python3
"""make_image_fixtures.py: writes tests/golden/images/, the fixtures of tests/test_image.c.

Usage: /usr/bin/python3 tools/reference/make_image_fixtures.py [OUT_DIR]   (default tests/golden/images)

Never needed to build or test: the outputs are committed. The reference for every decoded image is
what users run in PyTorch: PIL's decode (Pillow 9.4 over the system libjpeg-turbo 2.1.5 and zlib),
`ImageOps.exif_transpose`, then `.convert("RGB")`. Expected pixels are written as binary PPM (P6),
which the test reads with a few lines of its own, so no expected value goes through the decoder
under test.

Files:
  jpeg_*.jpg, png_*.png       inputs; <stem>.ppm is PIL's RGB8 result for each
  eval_<src>_r<R>_s<S>.ppm    torchvision Compose([Resize(R), CenterCrop(S)]) on the PIL image: the uint8
                              crop that ToTensor + Normalize turn into the model input
  eval_norm_lut.f32           3x256 float32: torchvision's ToTensor + Normalize(ImageNet) of the value
                              v in channel c at [c*256 + v]; the script checks that the full float
                              pipeline equals LUT[crop] bit for bit, so the C test compares with
                              LUT[expected crop] exactly
  pil_resize_<w>x<h>.ppm      Image.resize((w, h), BILINEAR) of aa_src.ppm
  aa_src.ppm, aa_<case>.f32   torch.nn.functional.interpolate(bilinear, antialias=True,
                              align_corners=False) of a crop of aa_src as float (0..255 scale),
                              HWC float32 little-endian
  bad_*                       inputs that must fail with an error naming the file

Image content is synthetic (gradients, disks, stripes, seeded noise): no data set is needed.
"""
import ctypes
import io
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, ImageOps

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/images"
rng = np.random.RandomState(1234)


def synth(w, h, seed):
    """Colourful synthetic RGB8 picture with smooth areas, hard edges and mild noise."""
    r = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 255 * x / max(w - 1, 1)
    img[..., 1] = 255 * y / max(h - 1, 1)
    img[..., 2] = 128 + 100 * np.sin(x / 5.0 + y / 7.0)
    for _ in range(4):
        cx, cy, rad = r.uniform(0, w), r.uniform(0, h), r.uniform(3, max(4, min(w, h) / 3))
        m = (x - cx) ** 2 + (y - cy) ** 2 < rad ** 2
        img[m] = r.uniform(0, 255, 3)
    img[(x.astype(int) // 6) % 5 == 0] *= 0.5
    img += r.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def path(name):
    return os.path.join(OUT, name)


def write_ppm(name, rgb):
    h, w, _ = rgb.shape
    with open(path(name), "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h))
        f.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


def pil_reference(name):
    """What users get: PIL decode, EXIF orientation applied, converted to RGB."""
    with Image.open(path(name)) as im:
        out = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(out, dtype=np.uint8)


def write_reference(name):
    write_ppm(os.path.splitext(name)[0] + ".ppm", pil_reference(name))


# ---------------------------------------------------------------- EXIF ------------------------

def exif_tiff(orientation, endian="<", typ=3, extra_before=True, ifd_offset=None):
    """A minimal TIFF block (the payload after "Exif\\0\\0") with IFD0 holding Orientation."""
    bo = b"II" if endian == "<" else b"MM"
    entries = []
    if extra_before:  # a couple of harmless tags so Orientation is not the first entry
        entries.append(struct.pack(endian + "HHI4s", 0x010F, 2, 4, b"dsc\0"))  # Make, inline ASCII
        entries.append(struct.pack(endian + "HHIHH", 0x0110, 3, 1, 7, 0))      # a SHORT tag
    if typ == 3:
        entries.append(struct.pack(endian + "HHIHH", 0x0112, 3, 1, orientation, 0))
    else:
        entries.append(struct.pack(endian + "HHII", 0x0112, 4, 1, orientation))
    entries.sort(key=lambda e: struct.unpack(endian + "H", e[:2])[0])
    off = 8 if ifd_offset is None else ifd_offset
    body = struct.pack(endian + "H", len(entries)) + b"".join(entries) + struct.pack(endian + "I", 0)
    return bo + struct.pack(endian + "HI", 42, off) + body


def jpeg_with_app1(jpeg, payload):
    """Inserts an APP1 segment right after SOI."""
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + seg + jpeg[2:]


def strip_app14(jpeg):
    """Removes every Adobe APP14 segment (before the first SOS)."""
    out, pos = bytearray(jpeg[:2]), 2
    while pos < len(jpeg):
        marker = jpeg[pos + 1]
        if marker == 0xDA:
            out += jpeg[pos:]
            break
        n = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if marker != 0xEE:
            out += jpeg[pos:pos + 2 + n]
        pos += 2 + n
    return bytes(out)


def jpeg_bytes(arr, mode, **kw):
    b = io.BytesIO()
    Image.fromarray(arr, mode).save(b, "JPEG", **kw)
    return b.getvalue()


def ycck_jpeg(cmyk):
    """A YCCK JPEG (Adobe transform 2) through TurboJPEG's compressor, which PIL cannot write."""
    tj = ctypes.CDLL("libturbojpeg.so.0")
    tj.tjInitCompress.restype = ctypes.c_void_p
    h = tj.tjInitCompress()
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    hh, ww, _ = cmyk.shape
    src = np.ascontiguousarray(cmyk)
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = tj.tjCompress2(ctypes.c_void_p(h), src.ctypes.data_as(ctypes.c_void_p), ww, ww * 4, hh,
                        TJPF_CMYK, ctypes.byref(buf), ctypes.byref(size), TJSAMP_420, 90, 0)
    assert rc == 0, "tjCompress2 failed"
    data = ctypes.string_at(buf, size.value)
    tj.tjFree(buf)
    tj.tjDestroy(ctypes.c_void_p(h))
    assert b"Adobe" in data[:200]
    return data


# ---------------------------------------------------------------- PNG (hand-made) -------------

def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(samples, bit_depth, color_type, plte=None, trns=None, interlace=False, exif=None):
    """Any PNG layout from an (h, w, channels) array of integer samples, written by hand so every
    bit depth / colour type / interlace combination can be made (PIL writes only a few)."""
    h, w, ch = samples.shape

    def row_bytes(row):
        flat = row.reshape(-1).astype(np.int64)
        if bit_depth == 16:
            return b"".join(struct.pack(">H", int(v)) for v in flat)
        if bit_depth == 8:
            return bytes(int(v) for v in flat)
        per = 8 // bit_depth
        out = bytearray()
        for i in range(0, len(flat), per):
            byte = 0
            for j in range(per):
                v = int(flat[i + j]) if i + j < len(flat) else 0
                byte |= v << (8 - bit_depth * (j + 1))
            out.append(byte)
        return bytes(out)

    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw += b"\0" + row_bytes(row)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += png_chunk(b"tRNS", bytes(trns))
    if exif is not None:
        out += png_chunk(b"eXIf", exif)
    out += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


def save_bytes(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- decode fixtures -------------

def make_decode_fixtures():
    base = synth(67, 45, 1)  # odd sizes: partial MCUs on both edges
    for name, kw in [("jpeg_baseline_420.jpg", dict(quality=90, subsampling=2)),
                     ("jpeg_baseline_422.jpg", dict(quality=90, subsampling=1)),
                     ("jpeg_baseline_444.jpg", dict(quality=95, subsampling=0)),
                     ("jpeg_progressive.jpg", dict(quality=90, subsampling=2, progressive=True))]:
        save_bytes(name, jpeg_bytes(base, "RGB", **kw))
        write_reference(name)
    gray = synth(41, 29, 2)[..., 1]
    save_bytes("jpeg_gray.jpg", jpeg_bytes(gray, "L", quality=90))
    write_reference("jpeg_gray.jpg")

    cmyk = np.concatenate([synth(38, 27, 3), synth(38, 27, 4)[..., :1]], axis=2)
    cmyk_jpeg = jpeg_bytes(cmyk, "CMYK", quality=92)
    assert b"Adobe" in cmyk_jpeg[:200]
    save_bytes("jpeg_cmyk.jpg", cmyk_jpeg)
    save_bytes("jpeg_cmyk_noadobe.jpg", strip_app14(cmyk_jpeg))
    save_bytes("jpeg_ycck.jpg", ycck_jpeg(cmyk))
    for name in ["jpeg_cmyk.jpg", "jpeg_cmyk_noadobe.jpg", "jpeg_ycck.jpg"]:
        write_reference(name)

    # EXIF orientation: a 40x30 picture (non-square so rotations change the shape).
    ori = jpeg_bytes(synth(40, 30, 5), "RGB", quality=90)
    for o in range(1, 9):
        save_bytes("jpeg_exif_%d.jpg" % o, jpeg_with_app1(ori, b"Exif\0\0" + exif_tiff(o)))
    save_bytes("jpeg_exif_6_be.jpg", jpeg_with_app1(ori, b"Exif\0\0" + exif_tiff(6, ">")))
    save_bytes("jpeg_exif_8_long.jpg", jpeg_with_app1(ori, b"Exif\0\0" + exif_tiff(8, "<", typ=4)))
    # malformed EXIF: IFD0 offset far outside the block; PIL reads no orientation
    save_bytes("jpeg_exif_bad.jpg", jpeg_with_app1(ori, b"Exif\0\0" + exif_tiff(6, ifd_offset=0x7FFFFF00)))
    # two Exif blocks: PIL (and we) use the first one
    save_bytes("jpeg_exif_two.jpg", jpeg_with_app1(jpeg_with_app1(ori, b"Exif\0\0" + exif_tiff(3)),
                                                   b"Exif\0\0" + exif_tiff(6)))
    for o in range(1, 9):
        write_reference("jpeg_exif_%d.jpg" % o)
    for name in ["jpeg_exif_6_be.jpg", "jpeg_exif_8_long.jpg", "jpeg_exif_bad.jpg", "jpeg_exif_two.jpg"]:
        write_reference(name)

    # PNG: every colour type and bit depth PIL reads, interlaced too.
    w, h = 37, 23
    rgb = synth(w, h, 6).astype(np.int64)
    lum = rgb[..., 1:2]
    r16 = np.random.RandomState(7)
    gray16 = lum * 600 // 255 + r16.randint(0, 3, lum.shape)
    rgb16 = rgb * 256 + r16.randint(0, 256, rgb.shape)
    pngs = {
        "png_gray1.png": png_bytes(lum >> 7, 1, 0),
        "png_gray2.png": png_bytes(lum >> 6, 2, 0),
        "png_gray4.png": png_bytes(lum >> 4, 4, 0),
        "png_gray8.png": png_bytes(lum, 8, 0),
        "png_gray8_trns.png": png_bytes(lum, 8, 0, trns=struct.pack(">H", int(lum[0, 0, 0]))),
        # 16-bit grey spans 0..600 so PIL's clip to 255 (mode "I" -> "RGB") shows on part of it
        "png_gray16.png": png_bytes(gray16, 16, 0),
        "png_graya8.png": png_bytes(np.concatenate([lum, rgb[..., :1]], 2), 8, 4),
        "png_graya16.png": png_bytes(np.concatenate([np.minimum(lum * 257 + 3, 65535), rgb[..., :1] * 257], 2), 16, 4),
        "png_rgb8.png": png_bytes(rgb, 8, 2),
        "png_rgb8_trns.png": png_bytes(rgb, 8, 2, trns=struct.pack(">HHH", *[int(v) for v in rgb[0, 0]])),
        "png_rgb16.png": png_bytes(rgb16, 16, 2),
        "png_rgba8.png": png_bytes(np.concatenate([rgb, lum], 2), 8, 6),
        "png_rgba16.png": png_bytes(np.concatenate([rgb * 256 + 255, lum * 257], 2), 16, 6),
        "png_rgb8_interlaced.png": png_bytes(rgb, 8, 2, interlace=True),
        "png_rgba16_interlaced.png": png_bytes(np.concatenate([rgb * 257, lum * 257], 2), 16, 6, interlace=True),
    }
    # palettes: 8-bit with 200 entries, 4-bit with 12 entries and indices up to 15 (out of range:
    # PIL shows the grey ramp value there), 2-bit interlaced, 8-bit with tRNS
    pal = rng.randint(0, 256, (256, 3)).astype(np.uint8)
    idx8 = (rgb[..., :1] * 200 // 256)
    idx4 = (rgb[..., :1] >> 4)
    idx2 = (rgb[..., 1:2] >> 6)
    pngs["png_pal8.png"] = png_bytes(idx8, 8, 3, plte=pal[:200].reshape(-1))
    pngs["png_pal4_oob.png"] = png_bytes(idx4, 4, 3, plte=pal[:12].reshape(-1))
    pngs["png_pal2_interlaced.png"] = png_bytes(idx2, 2, 3, plte=pal[:4].reshape(-1), interlace=True)
    pngs["png_pal8_trns.png"] = png_bytes(idx8, 8, 3, plte=pal[:200].reshape(-1),
                                          trns=bytes(rng.randint(0, 256, 150).astype(np.uint8)))
    pngs["png_exif_6.png"] = png_bytes(rgb, 8, 2, exif=exif_tiff(6))
    for name, data in pngs.items():
        save_bytes(name, data)
        write_reference(name)
    # the hand-made files really are what they claim to be
    assert pil_reference("png_rgb8.png").tolist() == rgb.astype(np.uint8).tolist()
    assert pil_reference("png_rgb8_interlaced.png").tolist() == rgb.astype(np.uint8).tolist()
    # PIL's 16-bit rules, which the C decoder follows: grey is read as mode "I" and clipped to
    # 0..255 by convert("RGB"); every other 16-bit layout keeps the high byte
    with Image.open(path("png_gray16.png")) as im:
        assert im.mode == "I"
    assert np.array_equal(pil_reference("png_gray16.png")[..., 0], np.clip(gray16[..., 0], 0, 255))
    assert np.array_equal(pil_reference("png_rgb16.png"), (rgb16 >> 8).astype(np.uint8))
    return base


# ---------------------------------------------------------------- eval transform -------------

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def eval_case(src_name, resize, size):
    """torchvision's eval Compose on the PIL image; writes the uint8 crop, checks the LUT claim."""
    with Image.open(path(src_name)) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    if img.size == (size, size):
        crop = img  # dsc's rule (spec/INTERFACES.md): an image already size x size is used as is
    else:
        crop = T.Compose([T.Resize(resize), T.CenterCrop(size)])(img)
    assert crop.size == (size, size)
    full = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(crop)  # (3, S, S) float32
    u8 = np.asarray(crop, dtype=np.uint8)
    lut = norm_lut()
    via_lut = np.stack([lut[c][u8[..., c]] for c in range(3)], 0)
    assert np.array_equal(via_lut.view(np.uint32), full.numpy().view(np.uint32)), "LUT != torchvision"
    stem = os.path.splitext(src_name)[0]
    if img.size == (size, size):
        return  # the expected crop is the decoded input itself: no file needed
    write_ppm("%s_r%d_s%d.ppm" % (stem, resize, size), u8)


_LUT = []


def norm_lut():
    if not _LUT:
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1x256 RGB
        t = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(Image.fromarray(ramp, "RGB"))
        _LUT.append(t.numpy()[:, 0, :].astype(np.float32))  # (3, 256)
    return _LUT[0]


def make_eval_fixtures():
    save_bytes("eval_landscape.jpg", jpeg_bytes(synth(300, 200, 10), "RGB", quality=88))
    Image.fromarray(synth(131, 197, 11)).save(path("eval_portrait.png"))
    sq = synth(224, 224, 12)
    sq = (sq.astype(np.int64) // 8 * 8).astype(np.uint8)  # coarser levels: a smaller PNG
    Image.fromarray(sq).save(path("eval_square224.png"), optimize=True)
    Image.fromarray(synth(40, 30, 13)).save(path("eval_small.png"))
    Image.fromarray(synth(64, 90, 14)).save(path("eval_noresize.png"))
    eval_case("eval_landscape.jpg", 256, 224)   # the defaults (an upscale here: 200 -> 256)
    eval_case("eval_landscape.jpg", 32, 28)     # strong downscale (support 6.25 px)
    eval_case("eval_portrait.png", 81, 64)      # odd offsets: round-half-even in both axes
    eval_case("eval_portrait.png", 100, 96)
    eval_case("eval_small.png", 64, 56)         # upscale
    eval_case("eval_small.png", 48, 56)         # crop larger than the resized image: zero padding
    eval_case("eval_noresize.png", 64, 56)      # shorter side already 64: crop only
    eval_case("eval_square224.png", 256, 224)   # already size x size: used as is
    norm_lut().astype("<f4").tofile(path("eval_norm_lut.f32"))


# ---------------------------------------------------------------- float AA resize -------------

AA_CASES = [  # name, top, left, crop_h, crop_w, out_h, out_w  (must match tests/test_image.c)
    ("down", 0, 0, 43, 61, 13, 20),
    ("mixed", 0, 0, 43, 61, 60, 17),
    ("region_down", 5, 7, 25, 30, 9, 11),
    ("region_up", 3, 2, 9, 12, 21, 29),
    ("width_only", 0, 0, 43, 61, 43, 20),
    ("height_only", 0, 0, 43, 61, 11, 61),
]

PIL_RESIZES = [(20, 13), (17, 60), (90, 70), (61, 20), (7, 43)]  # (w, h), must match tests/test_image.c


def make_aa_fixtures():
    src = synth(61, 43, 20)
    write_ppm("aa_src.ppm", src)
    x = torch.from_numpy(src.astype(np.float32)).permute(2, 0, 1)[None]
    for name, top, left, ch, cw, oh, ow in AA_CASES:
        crop = x[:, :, top:top + ch, left:left + cw]
        y = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)
        y[0].permute(1, 2, 0).contiguous().numpy().astype("<f4").tofile(path("aa_%s.f32" % name))
    # Pillow's uint8 bilinear resize of the same picture (dsc_image_resize_u8)
    for ow, oh in PIL_RESIZES:
        write_ppm("pil_resize_%dx%d.ppm" % (ow, oh), np.asarray(Image.fromarray(src).resize((ow, oh), Image.BILINEAR)))


# ---------------------------------------------------------------- bad inputs ------------------

def make_bad_fixtures():
    save_bytes("bad_empty.jpg", b"")
    save_bytes("bad_text.jpg", b"this is a text file, not a JPEG\n")
    rnd = rng.randint(0, 256, 512).astype(np.uint8).tobytes()
    save_bytes("bad_random.bin", b"\x00" + rnd[1:])
    good_jpeg = open(path("jpeg_baseline_420.jpg"), "rb").read()
    save_bytes("bad_truncated.jpg", good_jpeg[:len(good_jpeg) * 6 // 10])
    good_png = open(path("png_rgb8.png"), "rb").read()
    save_bytes("bad_truncated.png", good_png[:len(good_png) * 6 // 10])
    save_bytes("bad_gif.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    for name in ["bad_truncated.jpg", "bad_truncated.png", "bad_text.jpg", "bad_random.bin"]:
        try:
            Image.open(path(name)).convert("RGB")
        except Exception:
            continue
        raise AssertionError("PIL decoded %s" % name)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_decode_fixtures()
    make_eval_fixtures()
    make_aa_fixtures()
    make_bad_fixtures()
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    main()
