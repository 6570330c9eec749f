"""``predict_videos`` batches videos through the evaluation loader: the same scores as one video at a
time, results in the order of the files, and undecodable files named in their place."""

import torch

import tubelet
from tubelet.engine.config import DataConfig
from tubelet.engine.predict import predict_videos


def test_batched_prediction_matches_one_video_at_a_time(tiny_synth, tmp_path):
    torch.manual_seed(0)
    names = (tiny_synth / "classes.txt").read_text().split()
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=len(names), depth=1, embed_dim=32,
                                 num_heads=2, num_frames=4, img_size=16).eval()
    model.class_names = names
    data = DataConfig(num_frames=4, img_size=16)
    videos = sorted((tiny_synth / "videos").rglob("*.mp4"))[:3]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    paths = [videos[0], bad, videos[1], videos[2], videos[0]]
    batched = predict_videos(model, paths, data, views=(2, 3), topk=len(names), batch_size=3, num_workers=2)
    assert [r["path"] for r in batched] == [str(p) for p in paths]
    assert batched[1]["error"].startswith("cannot decode: ")
    for path, result in zip(paths, batched):
        if path == bad:
            continue
        alone = predict_videos(model, [path], data, views=(2, 3), topk=len(names), batch_size=1)[0]["top"]
        assert [t["class"] for t in result["top"]] == [t["class"] for t in alone]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(result["top"], alone)) < 1e-5
    assert batched[0]["top"] == batched[4]["top"]
