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


def test_a_multi_label_model_scores_each_class_by_its_sigmoid():
    """Softmax over classes for a single-label model; for one trained on multi-label data (its
    metadata says) the mean over views of each class's sigmoid, which need not sum to one."""
    from tubelet.engine.predict import _probabilities

    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5, depth=1, embed_dim=32,
                                 num_heads=2, num_frames=4, img_size=16).eval()
    video = torch.randn(2, 3, 3, 4, 16, 16)  # [B, V, C, T, H, W]
    with torch.no_grad():
        logits = model(video.flatten(0, 1)).reshape(2, 3, 5)
    single = _probabilities(model, video, torch.device("cpu"), None)
    torch.testing.assert_close(single, logits.softmax(-1).mean(1))
    model.metadata = model.metadata.replace(multi_label=True)
    multi = _probabilities(model, video, torch.device("cpu"), None)
    torch.testing.assert_close(multi, logits.sigmoid().mean(1))
    assert not torch.allclose(multi.sum(-1), torch.ones(2))
