"""``prepare`` (videos/images -> a training dataset) and the torch datasets over its output.

The dataset is real: clips rendered by the built-in chain and prepared by the CLI
(``prepared_dataset`` fixture, ``train_data.py``). Bad inputs, resuming and interrupted writes
run on a second, tiny source folder.
"""
from __future__ import annotations

import logging
import pickle
import shutil

import numpy as np
import pytest
import torch

from segtalker_core import labels as L
from segtalker_core.audio.io import load_audio
from segtalker_core.audio.mel import mel_windows
from segtalker_core.audio.timing import frame_count, mel_window_starts
from segtalker_core.train import shards
from segtalker_core.train.datasets import (FaceImageDataset, SyncWindowDataset, TalkingSegDataset,
                                           dataset_hash, open_dataset, resize_labels)
from segtalker_core.train.prepare import PrepareSettings, prepare_dataset, resample_chunks

import train_data

LIPS = L.REGIONS_12.index("lips")
MOUTH = L.REGIONS_12.index("mouth_interior")
RES = 64  # item resolution in these tests (half the stored crops: exercises the resize)


# ------------------------------------------------------------------------------ the dataset

def test_prepared_dataset_holds_every_clip_split_by_clip_within_speakers(prepared_dataset):
    ds = open_dataset(prepared_dataset)
    src = train_data.source_folder(prepared_dataset)
    assert (ds.kind, ds.fps, ds.sample_rate, ds.crop_size) == ("video", 25, 16000, 128)
    assert len(ds.clips) == sum(len(v) for v in train_data.CLIPS.values())
    assert len({c.id for c in ds.clips}) == len(ds.clips)
    for speaker, sentences in train_data.CLIPS.items():
        mine = [c for c in ds.clips if c.speaker == speaker]
        assert len(mine) == len(sentences)
        assert sorted(c.split for c in mine) == ["train", "train", "val"]  # round(0.34 * 3) = 1
    for clip in ds.clips:
        shard = shards.open_shard(clip.shard)
        audio = load_audio(src / clip.source)
        assert clip.frames == len(shard) == frame_count(audio.duration, 25)  # cut at the speech's end
        assert shard.crops.shape == (clip.frames, 128, 128, 3) and shard.crops.dtype == np.uint8
        assert shard.regions.shape == (clip.frames, 128, 128) and shard.regions.max() < 12
        assert shard.found.all() and clip.faces == clip.frames
        lips_share = np.mean([(m == LIPS).any() for m in shard.regions])
        assert lips_share > 0.9
        assert shard.meta["source"] == clip.source and shard.meta["speaker"] == clip.speaker


def test_prepared_mel_is_the_pipelines_centred_window(prepared_dataset):
    src = train_data.source_folder(prepared_dataset)
    ds = TalkingSegDataset(prepared_dataset, resolution=RES)
    for index in (0, len(ds) // 2, len(ds) - 1):
        clip, frame = ds.where(index)
        expected = mel_windows(load_audio(src / clip.source), 25, align="centre")
        item = ds[index]
        np.testing.assert_allclose(item["mel_window"][:, 0].numpy(), expected[frame - 2:frame + 3],
                                   atol=1e-5)
        np.testing.assert_array_equal(item["mel"].numpy(), item["mel_window"][2].numpy())


def _window_energy(shard: shards.Shard, frames: int) -> np.ndarray:
    """Mean of the middle four mel steps of each frame's centred window (the frame's loudness)."""
    starts = mel_window_starts(0, frames, 25, align="centre") - shard.meta["mel_first_step"]
    mel = np.asarray(shard.mel)
    return np.array([mel[:, s + 6:s + 10].mean() if 0 <= s and s + 10 <= mel.shape[1] else -4.0
                     for s in starts])


def _lagged_r(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    n = len(a)
    return float(np.corrcoef(a[max(0, lag):n + min(0, lag)], b[max(0, -lag):n - max(0, lag)])[0, 1])


def test_prepared_maps_and_audio_are_in_sync(prepared_dataset):
    """The mouth opening in the maps follows the loudness in the mel, best at lag 0: frames and
    mel columns line up (an off-by-some-frames bug would move the peak)."""
    r_at_zero = []
    for clip in open_dataset(prepared_dataset).clips:
        shard = shards.open_shard(clip.shard)
        mouth = (np.asarray(shard.regions) == MOUTH).sum(axis=(1, 2)).astype(float)
        energy = _window_energy(shard, clip.frames)
        r = {lag: _lagged_r(mouth, energy, lag) for lag in range(-6, 7)}
        assert max(r, key=r.get) in (-1, 0, 1), (clip.id, r)
        r_at_zero.append(r[0])
    assert np.mean(r_at_zero) > 0.45, r_at_zero


# ------------------------------------------------------------------------------ the datasets

def test_sync_windows_match_the_contract_and_are_half_in_sync(prepared_dataset):
    ds = SyncWindowDataset(prepared_dataset, split="train", resolution=RES, seed=3)
    item = ds[0]
    assert item["mel"].shape == (1, 80, 16) and item["mel"].dtype == torch.float32
    assert item["maps"].shape == (5, RES, RES) and item["maps"].dtype == torch.int64
    assert item["label"].shape == () and item["label"].dtype == torch.float32
    labels = np.array([float(ds[i]["label"]) for i in range(len(ds))])
    assert set(labels) == {0.0, 1.0} and 0.4 < labels.mean() < 0.6
    for i in range(12):
        clip, centre = ds.where(i)
        regions = shards.open_shard(clip.shard).regions
        truth = torch.from_numpy(resize_labels(regions[centre - 2:centre + 3], RES).astype(np.int64))
        item = ds[i]
        assert torch.equal(item["maps"], truth) == bool(item["label"])  # negatives are other windows
        assert torch.equal(ds[i]["maps"], item["maps"])  # an item is a function of its index
    before = [float(ds[i]["label"]) for i in range(40)]
    ds.set_epoch(1)
    assert [float(ds[i]["label"]) for i in range(40)] != before
    assert len(pickle.dumps(ds)) < 100_000  # memory maps are reopened per worker, never pickled
    val = SyncWindowDataset(prepared_dataset, split="val", resolution=RES)
    assert {c.split for c in val.clips} == {"val"} and len(val) > 0


def test_sync_windows_feed_the_syncnet(prepared_dataset):
    from segtalker_core.models.syncnet import SegSyncNet, SyncNetConfig, sync_bce_loss
    from segtalker_core.models.tsg import onehot

    ds = SyncWindowDataset(prepared_dataset, resolution=RES)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    net = SegSyncNet(SyncNetConfig(resolution=RES, visual_widths=(8, 16, 32, 64, 512)))
    b, f = batch["maps"].shape[:2]
    audio, visual = net(batch["mel"], onehot(batch["maps"].flatten(0, 1)).unflatten(0, (b, f)))
    loss = sync_bce_loss(audio, visual, batch["label"])
    assert torch.isfinite(loss)


def test_talking_seg_items_feed_the_tsg(prepared_dataset):
    from segtalker_core.models.tsg import TSG, TSGConfig, onehot

    ds = TalkingSegDataset(prepared_dataset, resolution=RES)
    item = ds[5]
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in item.items()}
    assert shapes == {"mel": ((1, 80, 16), torch.float32), "target": ((RES, RES), torch.int64),
                      "reference": ((RES, RES), torch.int64),
                      "mel_window": ((5, 1, 80, 16), torch.float32),
                      "target_window": ((5, RES, RES), torch.int64)}
    assert torch.equal(item["target"], item["target_window"][2])
    assert (item["target"] == LIPS).any()  # unmasked: the TSG masks its source itself
    clip, frame = ds.where(5)
    regions = shards.open_shard(clip.shard).regions
    matches = [f for f in range(clip.frames)
               if torch.equal(torch.from_numpy(resize_labels(regions[f], RES).astype(np.int64)),
                              item["reference"])]
    assert matches and min(abs(f - frame) for f in matches) >= 5  # another frame of the clip
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    tsg = TSG(TSGConfig(resolution=RES, base_channels=8, max_channels=16, bottleneck_size=8))
    logits = tsg(onehot(batch["target"]), onehot(batch["reference"]), batch["mel"])
    assert logits.shape == (2, 12, RES, RES)


def test_face_images_are_the_crops_in_minus_one_to_one(prepared_dataset):
    ds = FaceImageDataset(prepared_dataset, resolution=128)
    assert len(ds) == sum(c.faces for c in ds.clips)
    item = ds[7]
    clip, frame = ds.where(7)
    shard = shards.open_shard(clip.shard)
    expected = torch.from_numpy(np.asarray(shard.crops[frame]).transpose(2, 0, 1).copy()) / 127.5 - 1
    torch.testing.assert_close(item["image"], expected.float())
    assert torch.equal(item["regions"], torch.from_numpy(shard.regions[frame].astype(np.int64)))
    small = FaceImageDataset(prepared_dataset, resolution=RES, frame_step=4)[0]
    assert small["image"].shape == (3, RES, RES) and small["regions"].shape == (RES, RES)
    assert -1.0 <= float(small["image"].min()) and float(small["image"].max()) <= 1.0


def test_dataset_hash_names_the_content(prepared_dataset, tmp_path):
    first = dataset_hash(prepared_dataset)
    copy = tmp_path / "copy"
    shutil.copytree(prepared_dataset, copy)
    assert dataset_hash(copy) == first
    index = shards.read_index(copy)
    for clip in index.clips:
        clip.split = "train"
    shards.write_index(copy, index)
    assert dataset_hash(copy) != first
    with pytest.raises(ValueError, match=r"'val' split .* has no window .*val: 0 clip"):
        SyncWindowDataset(copy, split="val", resolution=RES)


def test_resample_to_25_fps_by_display_time():
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    chunks = [frames[:3], frames[3:7], frames[7:]]
    from fractions import Fraction

    out = np.concatenate(list(resample_chunks(chunks, Fraction(50))))[:, 0, 0, 0]
    assert out.tolist() == [0, 2, 4, 6, 8]
    out = np.concatenate(list(resample_chunks(chunks, Fraction(10))))[:, 0, 0, 0]
    assert out.tolist() == [int(k * 10 / 25) for k in range(25)]  # each frame shown 2.5x


# ------------------------------------------------------------------------------ bad input

GOOD_CLIP = "astronaut/1.mp4"  # the shortest rendered clip


@pytest.fixture(scope="module")
def bad_source(prepared_dataset, tmp_path_factory):
    """A folder with one good clip, a corrupt file, a video without sound, and a clip in which
    the face shows in only 12 of 50 frames; prepared once through the CLI."""
    from segtalker_core.video_io import read_video, write_mp4
    from speech import speak_wave

    base = tmp_path_factory.mktemp("bad_inputs")
    src = base / "src"
    src.mkdir()
    good = train_data.source_folder(prepared_dataset) / GOOD_CLIP
    shutil.copy2(good, src / "good.mp4")
    rng = np.random.default_rng(0)
    (src / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(4000))
    frames, _ = read_video(good)
    write_mp4(src / "silent.mp4", frames[:25], 25.0)
    noise = rng.integers(0, 256, (38, *frames.shape[1:]), dtype=np.uint8)
    wave, rate = speak_wave("Two seconds of speech, but no face to see.")
    write_mp4(src / "noface.mp4", np.concatenate([frames[:12], noise]), 25.0,
              audio=wave[: 2 * rate], sample_rate=rate)
    out = base / "prepared"
    done = train_data.run_prepare_here(src, out)
    return src, out, done


def _settings() -> PrepareSettings:
    # What train_data.prepare_command asks for: a resumed run must keep it.
    return PrepareSettings(crop_size=train_data.CROP_SIZE, split_by="clip", val_fraction=0.34)


def test_bad_inputs_are_skipped_with_the_reason_and_the_rest_prepared(bad_source):
    src, out, done = bad_source
    assert done.returncode == 0, done.stderr
    index = shards.read_index(out)
    assert [c.source for c in index.clips] == ["good.mp4"]
    reasons = {s.source: s.reason for s in index.skipped}
    assert set(reasons) == {"corrupt.mp4", "silent.mp4", "noface.mp4"}
    assert reasons["corrupt.mp4"].startswith("corrupt or unreadable video")
    assert reasons["silent.mp4"].startswith("no audio track")
    assert reasons["noface.mp4"].startswith("no face in most frames")
    assert "12 of 50 frames have a face" in reasons["noface.mp4"]
    for name, reason in reasons.items():
        assert f"skipped {name}: {reason}" in done.stderr  # one log line each, with the reason
    assert "prepared 1 clip(s)" in done.stderr


def test_all_bad_inputs_is_an_error(bad_source, tmp_path):
    src, _, _ = bad_source
    only_bad = tmp_path / "src"
    only_bad.mkdir()
    shutil.copy2(src / "corrupt.mp4", only_bad / "corrupt.mp4")
    done = train_data.run_prepare_here(only_bad, tmp_path / "out")
    assert done.returncode == 2
    assert "error: no clip could be prepared" in done.stderr
    assert "skipped corrupt.mp4: corrupt or unreadable video" in done.stderr


def test_rerun_skips_finished_clips_without_duplicates(bad_source, caplog):
    src, out, _ = bad_source
    shard = out / shards.read_index(out).clips[0].shard
    stamp = shard.stat().st_mtime_ns
    before = shards.read_index(out)
    with caplog.at_level(logging.INFO, logger="segtalker"):
        report = prepare_dataset(src, out, _settings())
    assert (report.prepared, report.resumed, report.clips) == (0, 4, 1)
    after = shards.read_index(out)
    assert [c.id for c in after.clips] == [c.id for c in before.clips]
    assert len(after.skipped) == len(before.skipped) == 3
    assert shard.stat().st_mtime_ns == stamp  # not rewritten
    earlier = [r.message for r in caplog.records if "recorded by an earlier run" in r.message]
    assert len(earlier) == 3
    with pytest.raises(ValueError, match=r"crop_size=128 \(now 64\)"):
        prepare_dataset(src, out, PrepareSettings(crop_size=64, split_by="clip"))


def test_interrupted_write_never_counts_as_done(bad_source, monkeypatch):
    src, out, _ = bad_source
    clip = shards.read_index(out).clips[0]
    shard = out / clip.shard
    # An interrupted write: the writer dies half-way; nothing appears under the shard's name.
    target = out / shards.SHARD_FOLDER / "interrupted.npz"
    real_savez = np.savez

    def dying_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        shards.write_shard(target, {"crops": np.zeros((1, 8, 8, 3), np.uint8),
                                    "regions": np.zeros((1, 8, 8), np.uint8),
                                    "found": np.ones(1, bool)}, {})
    monkeypatch.setattr(np, "savez", real_savez)
    assert not target.exists()
    assert not [p for p in shard.parent.iterdir() if ".partial-" in p.name]
    # What a kill -9 can leave: a partial file (never read) and, were a shard damaged later, a
    # truncated one; a re-run redoes that clip and removes the partial.
    leftover = shard.parent / f".{shard.name}.partial-0badf00d.npz"
    leftover.write_bytes(b"PK\x03\x04")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert not shards.shard_is_complete(shard)
    report = prepare_dataset(src, out, _settings())
    assert (report.prepared, report.resumed) == (1, 3)
    assert not leftover.exists()
    assert shards.shard_is_complete(shard)
    again = shards.read_index(out).clips
    assert len(again) == 1 and again[0].sha256 == clip.sha256 == shards.file_sha256(shard)


# ------------------------------------------------------------------------------ images

def test_image_folder_with_celebamask_masks(tmp_path):
    from PIL import Image

    src, masks = tmp_path / "images", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(1)
    for n in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(src / f"{n}.jpg")
        mask = np.zeros((48, 48), np.uint8)
        mask[10:40, 10:40] = L.CELEBAMASK_19.index("skin")
        mask[30:34, 16:32] = L.CELEBAMASK_19.index("u_lip")
        mask[5:9, 12:20] = L.CELEBAMASK_19.index("hair")
        if n != 2:  # the third image has no mask
            Image.fromarray(mask).save(masks / f"{n}.png")
    report = prepare_dataset(src, tmp_path / "out", PrepareSettings(
        crop_size=64, masks=str(masks), val_fraction=0.4))
    index = shards.read_index(tmp_path / "out")
    assert index.kind == "images" and report.frames == 2
    assert {c.split for c in index.clips} <= {"train", "val"}
    assert [s.source for s in index.skipped] == ["2.jpg"] and "no mask" in index.skipped[0].reason
    ds = FaceImageDataset(tmp_path / "out", split=index.clips[0].split, resolution=64)
    item = ds[0]
    regions = item["regions"].numpy()  # nearest 48 -> 64: row r reads row floor((r + .5) * .75)
    assert regions[42, 30] == L.REGIONS_12.index("lips")
    assert regions[9, 20] == L.REGIONS_12.index("hair")
    assert regions[30, 30] == L.REGIONS_12.index("skin") and regions[0, 0] == 0
    assert item["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="needs a prepared \\*video\\* dataset"):
        SyncWindowDataset(tmp_path / "out", resolution=64)


def test_image_folder_parsed_by_the_pipeline(tmp_path):
    src = tmp_path / "images"
    (src / "alice").mkdir(parents=True)
    shutil.copy(train_data.PORTRAIT, src / "alice" / "portrait.png")
    from PIL import Image

    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(src / "alice" / "grey.png")
    report = prepare_dataset(src, tmp_path / "out", PrepareSettings(crop_size=64))
    index = shards.read_index(tmp_path / "out")
    assert report.clips == 1 and index.clips[0].frames == 1 and index.clips[0].speaker == "alice"
    assert [(s.source, s.reason) for s in index.skipped] == [("alice/grey.png", "no face found")]
    shard = shards.open_shard(tmp_path / "out" / index.clips[0].shard)
    assert (shard.regions[0] == LIPS).any() and (shard.regions[0] == L.REGIONS_12.index("skin")).mean() > 0.1


# ------------------------------------------------------------------------------ sources, splits

def test_sources_take_speakers_from_folders_lists_and_maps(tmp_path):
    from segtalker_core.train.sources import find_sources

    src = tmp_path / "src"
    for name in ("id01/a/1.mp4", "id01/b/2.mov", "id02/3.mkv", "loose.webm", ".hidden.mp4",
                 "notes.txt"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    kind, sources = find_sources(src)
    assert kind == "video"
    assert [(s.name, s.speaker) for s in sources] == [
        ("id01/a/1.mp4", "id01"), ("id01/b/2.mov", "id01"), ("id02/3.mkv", "id02"),
        ("loose.webm", None)]
    speakers = tmp_path / "speakers.tsv"
    speakers.write_text("loose\tid03\nid02/3.mkv\tid09\n")
    _, sources = find_sources(src, speakers)
    assert [s.speaker for s in sources] == ["id01", "id01", "id09", "id03"]
    listing = tmp_path / "list.txt"
    listing.write_text("# my clips\nsrc/id02/3.mkv\talice\n\nsrc/loose.webm\n")
    _, sources = find_sources(listing)
    assert [(s.name, s.speaker, s.path.is_file()) for s in sources] == [
        ("src/id02/3.mkv", "alice", True), ("src/loose.webm", None, True)]
    (src / "face.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"both videos \(4\) and images \(1\)"):
        find_sources(src)


def test_split_is_deterministic_never_empty_and_keeps_groups_whole():
    from segtalker_core.train.splits import assign_splits, group_of, resolve_split_by, stratum_of

    names = [(f"spk{s}/clip{c}.mp4", f"spk{s}") for s in range(10) for c in range(4)]
    assert resolve_split_by("auto", [sp for _, sp in names]) == "speaker"
    assert resolve_split_by("auto", [None, "a"]) == "clip"
    with pytest.raises(ValueError, match="1 source"):
        resolve_split_by("speaker", [None, "a"])
    groups = {group_of("speaker", n, sp): stratum_of("speaker", sp) for n, sp in names}
    split = assign_splits(groups, 0.2, seed=0)
    assert list(split.values()).count("val") == 2  # 2 of 10 speakers, each with all its clips
    assert assign_splits(dict(reversed(list(groups.items()))), 0.2, seed=0) == split
    assert any(assign_splits(groups, 0.2, seed=k) != split for k in range(1, 6))  # seeded
    clips = {group_of("clip", n, sp): stratum_of("clip", sp) for n, sp in names}
    by_clip = assign_splits(clips, 0.25)
    for s in range(10):  # one of each speaker's four videos is held out
        assert sum(by_clip[f"clip:spk{s}/clip{c}.mp4"] == "val" for c in range(4)) == 1
    assert list(assign_splits({"clip:a": "", "clip:b": ""}, 0.05).values()).count("val") == 1
    assert set(assign_splits({"clip:a": "", "clip:b": ""}, 0.0).values()) == {"train"}


def test_a_stopped_run_keeps_what_finished_and_resumes(bad_source, tmp_path, monkeypatch, caplog):
    from segtalker_core.train import prepare

    src, _, _ = bad_source
    listing = tmp_path / "two.txt"
    listing.write_text(f"{src / 'corrupt.mp4'}\n{src / 'silent.mp4'}\n")
    real_work = prepare._work
    calls = []

    def work_then_ctrl_c(kind, unit, root, settings):
        calls.append(unit.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_work(kind, unit, root, settings)

    monkeypatch.setattr(prepare, "_work", work_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(listing, tmp_path / "out", _settings())
    index = shards.read_index(tmp_path / "out")  # written on the way out
    assert [s.source for s in index.skipped] == [str(src / "corrupt.mp4")] and not index.clips
    monkeypatch.setattr(prepare, "_work", real_work)
    with caplog.at_level(logging.INFO, logger="segtalker"):
        report = prepare_dataset(listing, tmp_path / "out", _settings())
    assert (report.prepared, report.resumed, report.skipped) == (1, 1, 2)
    assert any("corrupt.mp4: corrupt or unreadable video" in r.message
               and "recorded by an earlier run" in r.message for r in caplog.records)
