"""Images: four variants of a 12 MP, ~4 MB photo-like JPEG, against libvips and naive Pillow.

All three are measured in the same run on the same bytes, best of N (the
machine is shared, so the minimum is the least noisy figure). Each produces
four square JPEGs (q85, progressive, optimised, no metadata):
- ours: tasks.images.pipeline.render (DCT-scaled decode once, attention crop
  once, 512 then 256/128/64 from it; includes sha256, blurhash, dominant colour);
- pyvips: ``thumbnail_buffer(data, s, height=s, crop="attention")`` per size,
  the way libvips is normally used (it shrinks on load for each call); and
  pyvips at its best, the headline (``images.variants_12mp_vs_pyvips_best``):
  one shrink-on-load thumbnail at 512 and the rest from it;
- naive Pillow: per size, open and fully decode, centre crop, Lanczos resize.
Peak memory is the RSS growth of a fresh process running one job.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.benchmarks.conftest import Goal, NoGoal, measure_task_throughput
from tests.images import corpus

SIZES = (512, 256, 128, 64)
TARGET_BYTES = 4_000_000


@pytest.fixture(scope="module")
def photo_12mp() -> bytes:
    image = corpus.photo_like(4000, 3000)
    best = None
    for quality in (85, 82, 88, 80, 90):
        data = corpus.save(image, "JPEG", quality=quality)
        if best is None or abs(len(data) - TARGET_BYTES) < abs(len(best) - TARGET_BYTES):
            best = data
        if abs(len(data) - TARGET_BYTES) < 300_000:
            break
    assert 3_500_000 <= len(best) <= 5_000_000
    return best


def best_of(fn, repeat: int) -> float:
    fn()  # warm caches, imports and lazily built ICC / cosine tables
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return min(timings) * 1000


def naive_pillow(data: bytes) -> list[bytes]:
    out = []
    for size in SIZES:
        image = Image.open(io.BytesIO(data))
        image.load()
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        variant = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
        buffer = io.BytesIO()
        variant.save(buffer, "JPEG", quality=85, progressive=True, optimize=True)
        out.append(buffer.getvalue())
    return out


def pyvips_thumbnails(data: bytes) -> list[bytes]:
    import pyvips

    return [pyvips.Image.thumbnail_buffer(data, size, height=size, crop="attention")
            .jpegsave_buffer(Q=85, interlace=True, optimize_coding=True, keep="none")
            for size in SIZES]


def pyvips_single_decode(data: bytes) -> list[bytes]:
    """libvips at its best for this job: one shrink-on-load thumbnail, the rest from it."""
    import pyvips

    large = pyvips.Image.thumbnail_buffer(data, 512, height=512, crop="attention").copy_memory()
    images = [large] + [large.thumbnail_image(size, height=size) for size in SIZES[1:]]
    return [image.jpegsave_buffer(Q=85, interlace=True, optimize_coding=True, keep="none") for image in images]


def ours(data: bytes):
    from tasks.images.pipeline import render

    return render(data)


PEAK_RSS_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tasks.images.pipeline import render
from tests.benchmarks.test_images import naive_pillow, pyvips_thumbnails

def high_water_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry the forking parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

data = open({path!r}, "rb").read()
before = high_water_kib()
{{"ours": render, "naive": naive_pillow, "pyvips": pyvips_thumbnails}}[{which!r}](data)
after = high_water_kib()
print(json.dumps({{"growth_kib": after - before}}))
"""


def peak_rss_growth_mb(which: str, path: str) -> float:
    from tests.conftest import ROOT

    script = PEAK_RSS_SCRIPT.format(root=str(ROOT), path=path, which=which)
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])["growth_kib"] / 1024


def test_four_variants_of_a_12mp_jpeg(photo_12mp, bench_record):
    rendered = ours(photo_12mp)
    assert [Image.open(io.BytesIO(v)).size for v in rendered.variants.values()] == [(s, s) for s in SIZES]
    assert [Image.open(io.BytesIO(v)).size for v in pyvips_thumbnails(photo_12mp)] == [(s, s) for s in SIZES]

    ours_ms = best_of(lambda: ours(photo_12mp), 7)
    vips_ms = best_of(lambda: pyvips_thumbnails(photo_12mp), 5)
    vips_single_ms = best_of(lambda: pyvips_single_decode(photo_12mp), 5)
    naive_ms = best_of(lambda: naive_pillow(photo_12mp), 3)
    common = {"source": f"4000x3000 JPEG, {len(photo_12mp):,} bytes", "stat": "best of N"}
    bench_record("images.variants_12mp_vs_pyvips", ours_ms, "ms", vips_ms,
                 "pyvips thumbnail_buffer x4 (crop=attention), same run",
                 pyvips_single_decode_ms=round(vips_single_ms, 1), **common,
                 goal=Goal("ratio", "<=", 1, "no slower than pyvips"))
    # The headline: pyvips at its best, one shrink-on-load thumbnail and the other sizes made from it.
    bench_record("images.variants_12mp_vs_pyvips_best", ours_ms, "ms", vips_single_ms,
                 "pyvips one shrink-on-load thumbnail_buffer at 512, the rest resized from it, same run",
                 pyvips_four_thumbnails_ms=round(vips_ms, 1), **common,
                 goal=Goal("ratio", "<=", 1, "no slower than pyvips at its best"))
    entry = bench_record("images.variants_12mp_vs_naive", ours_ms, "ms", naive_ms,
                         "naive Pillow x4 (full decode per size, crop, Lanczos), same run",
                         speedup=round(naive_ms / ours_ms, 1), **common,
                         goal=Goal("ratio", "<=", 0.1, "10x faster than naive"))
    assert ours_ms < vips_ms  # goal: no slower than libvips
    assert entry["speedup"] >= 5  # goal is 10x; the assert leaves room for a noisy shared machine


def test_peak_memory_of_one_variant_job(photo_12mp, bench_record, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo_12mp)
    ours_mb = peak_rss_growth_mb("ours", str(path))
    naive_mb = peak_rss_growth_mb("naive", str(path))
    vips_mb = peak_rss_growth_mb("pyvips", str(path))
    bench_record("images.peak_rss_one_job", ours_mb, "MB", naive_mb,
                 "naive Pillow (full 12 MP decode), fresh process", pyvips_mb=round(vips_mb, 1),
                 note="growth of VmHWM over a process that already imported everything and read the file",
                 goal=Goal("ratio", "<", 1, "less memory than one full decode"))
    assert ours_mb < naive_mb


def test_images_task_throughput(celery_app, noop_throughput, bench_record, clean_db, tmp_path, monkeypatch,
                                photo_12mp):
    from db.models import User
    from db.session import session_scope
    from tasks.images.tasks import process_profile_photo

    media = tmp_path / "media"
    (media / "uploads").mkdir(parents=True)
    (media / "uploads" / "photo.jpg").write_bytes(photo_12mp)
    monkeypatch.setenv("MEDIA_ROOT", str(media))  # inherited by the spawned worker
    count, warmup = 40, 4
    with session_scope() as session:
        users = [User(email=f"bench{i}@example.com", username=f"bench{i}", hashed_password="!")
                 for i in range(count + warmup)]
        session.add_all(users)
        session.flush()
        user_ids = [user.id for user in users]
    pending = list(user_ids)

    def send(n: int) -> list:
        batch = [pending.pop() for _ in range(n)]
        return [process_profile_photo.delay(user_id, "photo.jpg") for user_id in batch]

    celery_app.control.purge()
    rate = measure_task_throughput(celery_app, send, count, queues=["images"], concurrency=2,
                                   warmup=warmup, name="images-bench")
    bench_record("images.task_throughput_2proc", rate, "tasks/s", noop_throughput,
                 "maintenance.noop with 2 processes, same run", tasks=count,
                 source="12 MP JPEG, ~4 MB, one profile photo per task",
                 goal=NoGoal("decoding 12 MP dominates; set against the no-op task for scale"))
    with session_scope() as session:
        from sqlalchemy import text

        done = session.execute(text("SELECT count(*) FROM media_files WHERE processing_status = 'COMPLETED'")).scalar()
    assert done == count + warmup
