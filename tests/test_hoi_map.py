"""HOI mAP evaluator: both protocols on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interactdiffusion.data.boxes import one_based_to_continuous
from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.evaluation.detectors.base import HOIDetection
from interactdiffusion.evaluation.hoi_map import (
    DetectionArrays,
    HOIEvaluator,
    evaluate_hoi_detection,
    format_results_table,
    known_object_from_anno_mat,
    known_object_from_labels,
    rescale_ground_truth,
)
from interactdiffusion.evaluation.protocols.arrays import GroundTruthArrays
from interactdiffusion.evaluation.protocols.average_precision import (
    FGAHOI_RECALL_THRESHOLDS,
    OFFICIAL_RECALL_THRESHOLDS,
    class_ap,
    eleven_point_ap,
)
from interactdiffusion.evaluation.protocols.boxes import fgahoi_pair_iou, official_pair_iou
from interactdiffusion.vocab import HOIVocabulary

PROTOCOLS = ("official", "fgahoi")
# Classes: 0 ride bicycle, 1 hold bicycle (rare), 2 hold cup, 3 drink_with cup (rare), 4 hug person.
ACTIONS = [
    ("bicycle", "ride", "riding"),
    ("bicycle", "hold", "holding"),
    ("cup", "hold", "holding"),
    ("cup", "drink_with", "drinking_with"),
    ("person", "hug", "hugging"),
]
VOCAB = HOIVocabulary.from_action_list(ACTIONS, train_counts=[20, 3, 50, 5, 12])
RARE = [1, 3]

H1 = (10.0, 10.0, 110.0, 210.0)  # a human box
O1 = (60.0, 100.0, 260.0, 300.0)  # an object box
H2 = (300.0, 20.0, 400.0, 220.0)
O2 = (320.0, 150.0, 420.0, 250.0)
FAR = (0.0, 440.0, 20.0, 460.0)  # overlaps none of the above


def pair(hoi: int, human=H1, obj=O1) -> PairRecord:
    c = VOCAB.classes[hoi]
    return PairRecord(tuple(human), tuple(obj), hoi, c.verb, c.object)


def image(name: str, *pairs: PairRecord, size=(640, 480)) -> ImageRecord:
    return ImageRecord(name, size[0], size[1], list(pairs))


def det(hoi: int, score: float, human=H1, obj=O1) -> HOIDetection:
    return HOIDetection(tuple(human), tuple(obj), hoi, score)


def evaluate(records, detections, protocol, **kwargs):
    return evaluate_hoi_detection(records, detections, VOCAB, protocol, **kwargs)


def ap(results, hoi: int, setting: str = "default") -> float | None:
    row = results["per_class"][hoi]
    return row["ap"] if setting == "default" else row["ap_known_object"]


def all_classes_records() -> list[ImageRecord]:
    """Every class has GT: image a holds classes 0, 1 (same boxes), image b 2, 3, 4."""
    return [
        image("a.jpg", pair(0), pair(1), pair(0, H2, O2)),
        image("b.jpg", pair(2, H2, O2), pair(3, H2, O2), pair(4, H1, H2)),
    ]


def perfect(records) -> list[list[HOIDetection]]:
    return [[det(p.hoi, 0.9 - 0.01 * k, p.human_box, p.object_box) for k, p in enumerate(r.pairs)] for r in records]


# -- box conventions --------------------------------------------------------------------------------
def test_gt_goes_back_to_the_integer_boxes_of_the_files():
    """1-based inclusive [11, 21, 110, 220] -> continuous (10, 20, 110, 220) -> pixel index (10, 20, 109, 219)."""
    box = one_based_to_continuous([11, 21, 110, 220])
    gt = GroundTruthArrays.from_records([image("x.jpg", pair(0, box, box))], VOCAB.num_classes)
    assert gt.human_index.tolist() == [[10.0, 20.0, 109.0, 219.0]]


def test_iou_conventions_on_a_worked_pair():
    # official, 1-based: GT [1,1,10,10] (area 100) vs det 0-based [0,0,9,4] + 1 = [1,1,10,5] (area 50)
    assert official_pair_iou(np.array([[1.0, 1, 10, 5]]), np.array([[1.0, 1, 10, 10]]))[0] == 0.5
    # fgahoi: GT int(v - 1) = [0,0,9,9] (area 100) vs pred [0,0,9,4] (area 50), divided by union + 1e-6
    assert fgahoi_pair_iou(np.array([[0.0, 0, 9, 4]]), np.array([[0.0, 0, 9, 9]]))[0] == 50 / (100 + 1e-6)
    # touching boxes: MATLAB counts the shared pixel column, GGNet's area rule gives 0
    assert official_pair_iou(np.array([[1.0, 1, 5, 5]]), np.array([[5.0, 1, 9, 5]]))[0] == pytest.approx(5 / 45)
    assert fgahoi_pair_iou(np.array([[0.0, 0, 4, 4]]), np.array([[4.0, 0, 8, 4]]))[0] == 0.0


def test_rescaled_ground_truth_truncates_the_scaled_pixel_indices():
    box = one_based_to_continuous([11, 21, 110, 220])  # pixel index (10, 20, 109, 219) in 640x480
    (scaled,) = rescale_ground_truth([image("x.jpg", pair(0, box, box), size=(640, 480))], (512, 512))
    assert (scaled.width, scaled.height) == (512, 512)
    # int(512*10/640)=8, int(512*20/480)=21, int(512*109/640)=87, int(512*219/480)=233 -> continuous +1 on x2,y2
    assert scaled.pairs[0].human_box == (8.0, 21.0, 88.0, 234.0)
    gt = GroundTruthArrays.from_records([scaled], VOCAB.num_classes)
    assert gt.human_index.tolist() == [[8.0, 21.0, 87.0, 233.0]]


# -- the basic cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perfect_detections_score_100(protocol):
    records = all_classes_records()
    results = evaluate(records, perfect(records), protocol)
    for setting in ("default", "known_object"):
        for split in ("full", "rare", "non_rare"):
            assert results[setting][split] == pytest.approx(100.0)
    assert [row["recall"] for row in results["per_class"]] == [pytest.approx(100.0)] * 5
    assert results["num_images"] == 2 and results["num_detections"] == 6
    assert "Known Object" in format_results_table(results)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_detections_score_0(protocol):
    records = all_classes_records()
    results = evaluate(records, [[], []], protocol)
    assert results["default"]["full"] == 0.0 and results["per_class"][0]["recall"] == 0.0


def test_duplicate_is_a_false_positive():
    """Class 0 has GT at (H1,O1) and (H2,O2): TP, duplicate of the first, TP -> AP = (6*1 + 5*2/3)/11."""
    records = [image("a.jpg", pair(0), pair(0, H2, O2))]
    dets = [[det(0, 0.9), det(0, 0.8), det(0, 0.7, H2, O2)]]
    expected = 100 * (6 * 1.0 + 5 * (2 / 3)) / 11
    assert ap(evaluate(records, dets, "official"), 0) == pytest.approx(expected)
    # fgahoi's triplet NMS removes the exact duplicate before matching ...
    with_nms = evaluate(records, dets, "fgahoi")
    assert ap(with_nms, 0) == pytest.approx(100.0) and with_nms["num_detections_evaluated"] == 2
    # ... without NMS its matcher finds no free GT for it either
    assert ap(evaluate(records, dets, "fgahoi", nms_threshold=None), 0) == pytest.approx(expected)


def test_best_gt_including_matched_vs_first_free_gt():
    """Two overlapping GT pairs; the second detection overlaps both, the first one better.

    official takes the best GT even when it is matched -> FP; fgahoi takes the first free GT -> TP.
    """
    h_a, h_b = (0.0, 0.0, 100.0, 100.0), (10.0, 0.0, 110.0, 100.0)
    records = [image("a.jpg", pair(0, h_a, h_a), pair(0, h_b, h_b))]
    dets = [[det(0, 0.9, h_a, h_a), det(0, 0.8, h_a, h_a)]]
    official = evaluate(records, dets, "official")
    fgahoi = evaluate(records, dets, "fgahoi", nms_threshold=None)
    assert official["per_class"][0]["recall"] == pytest.approx(50.0)
    assert fgahoi["per_class"][0]["recall"] == pytest.approx(100.0)


def test_iou_of_exactly_one_half_matches_only_under_official():
    """Human IoU exactly 0.5 (official, +1 pixels), object perfect: >= 0.5 passes, > 0.5 does not."""
    gt_box = one_based_to_continuous([1, 1, 10, 10])  # 10x10 pixels
    records = [image("a.jpg", pair(0, gt_box, O1))]
    half = [[det(0, 0.9, (0.0, 0.0, 9.0, 4.0), O1)]]  # 0-based pixel indices: rows 1..5 of 1..10
    official = evaluate(records, half, "official")
    assert ap(official, 0) == pytest.approx(100.0)
    fgahoi = evaluate(records, half, "fgahoi")
    assert ap(fgahoi, 0) == 0.0
    above = [[det(0, 0.9, (0.0, 0.0, 9.0, 5.0), O1)]]  # 60 of 100 pixels
    assert ap(evaluate(records, above, "fgahoi"), 0) == pytest.approx(100.0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_score_ties_follow_image_order_not_row_order(protocol):
    """Equal scores: image a's FP ranks before image b's TP whatever the row order -> AP 0.5."""
    records = [image("a.jpg", pair(1)), image("b.jpg", pair(0))]
    rows = [(0, det(0, 0.5)), (1, det(0, 0.5))]  # image a has no class-0 GT: its detection is a FP
    for ordered in (rows, rows[::-1]):
        arrays = DetectionArrays(
            [i for i, _ in ordered], [d.hoi for _, d in ordered], [d.human_box for _, d in ordered],
            [d.object_box for _, d in ordered], [d.score for _, d in ordered],
        )
        assert ap(evaluate(records, arrays, protocol), 0) == pytest.approx(50.0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_image_without_gt_counts_its_detections_as_false_positives(protocol):
    records = [image("a.jpg", pair(0)), image("empty.jpg")]
    dets = [[det(0, 0.5)], [det(0, 0.9)]]  # the FP on the empty image ranks first
    results = evaluate(records, dets, protocol)
    assert ap(results, 0) == pytest.approx(50.0)
    # Known Object: the empty image contains no bicycle, so its detection is not scored there
    assert ap(results, 0, "known_object") == pytest.approx(100.0)
    assert results["per_class"][0]["num_det_known_object"] == 1


# -- Known Object ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_known_object_keeps_images_whose_gt_has_the_object(protocol):
    records = [image("bike.jpg", pair(0)), image("cup.jpg", pair(2, H2, O2)), image("person.jpg", pair(4))]
    dets = [[det(0, 0.5)], [det(0, 0.9), det(2, 0.8, H2, O2)], [det(0, 0.95)]]
    results = evaluate(records, dets, protocol)
    assert ap(results, 0) == pytest.approx(100 / 3)  # precision 1/3 at every threshold
    assert ap(results, 0, "known_object") == pytest.approx(100.0)
    # "person" as the hug object is known from object roles only: human boxes do not make it known
    assert results["per_class"][4]["num_gt_known_object"] == 1


def test_known_object_from_image_level_labels():
    """anno_test: a positive label for *any* class of the object makes the image known; 0/-1/NaN do not."""
    records = [image("bike.jpg", pair(0)), image("cup.jpg", pair(2, H2, O2)), image("other.jpg", pair(2))]
    labels = np.full((VOCAB.num_classes, 3), np.nan)
    labels[0, 0] = 1  # ride bicycle in bike.jpg
    labels[1, 1] = 1  # hold bicycle (same object) in cup.jpg
    labels[0, 2] = 0  # ambiguous
    labels[1, 2] = -1  # negative
    mask = known_object_from_labels(labels, VOCAB)
    bicycle = VOCAB.object_index("bicycle")
    assert mask[bicycle].tolist() == [True, True, False]
    dets = [[det(0, 0.5)], [det(0, 0.9)], [det(0, 0.95)]]
    results = evaluate(records, dets, "official", known_object=mask, known_object_source="labels")
    assert results["per_class"][0]["num_det_known_object"] == 2  # other.jpg dropped, cup.jpg kept
    assert ap(results, 0, "known_object") == pytest.approx(50.0)
    assert results["settings"]["known_object_source"] == "labels"


def test_known_object_from_anno_mat_aligns_columns_by_file_name(tmp_path):
    from scipy.io import savemat

    labels = np.full((VOCAB.num_classes, 2), -1.0)
    labels[2, 0] = 1.0  # column 0 is b.jpg: hold cup
    names = np.empty((2, 1), dtype=object)
    names[0, 0], names[1, 0] = "b.jpg", "a.jpg"
    savemat(tmp_path / "anno.mat", {"anno_test": labels, "list_test": names})
    mask = known_object_from_anno_mat(tmp_path / "anno.mat", ["a.jpg", "b.jpg"], VOCAB)
    assert mask[VOCAB.object_index("cup")].tolist() == [False, True]
    with pytest.raises(KeyError, match="not in list_test"):
        known_object_from_anno_mat(tmp_path / "anno.mat", ["c.jpg"], VOCAB)


# -- averaging ------------------------------------------------------------------------------------------
def test_rare_and_non_rare_means_with_the_nan_quirk():
    """GT for classes 0 (non-rare) and 1 (rare) only; detections for 0, 1 and 3 (rare, no GT).

    class 0: AP 1; class 1: FP then TP -> 0.5; class 2 (non-rare): neither GT nor detections; class 3:
    detections without GT; class 4 (non-rare): neither.
    """
    records = [image("a.jpg", pair(0), pair(1, H2, O2))]
    dets = [[det(0, 0.9), det(1, 0.9, FAR, FAR), det(1, 0.8, H2, O2), det(3, 0.7)]]
    fgahoi = evaluate(records, dets, "fgahoi")
    assert [row["ap"] for row in fgahoi["per_class"]] == [pytest.approx(100.0), pytest.approx(50.0), 0.0, None, 0.0]
    # fgahoi: class 3 is NaN and left out; classes 2 and 4 count as 0
    assert fgahoi["default"]["full"] == pytest.approx((100 + 50 + 0 + 0) / 4)
    assert fgahoi["default"]["rare"] == pytest.approx(50.0)
    assert fgahoi["default"]["non_rare"] == pytest.approx(100 / 3)
    assert fgahoi["num_classes_averaged"]["default"] == {"full": 4, "rare": 1, "non_rare": 3}
    # official (MATLAB): a class without GT has AP 0 whether or not it has detections, and counts
    official = evaluate(records, dets, "official")
    assert official["per_class"][3]["ap"] == 0.0
    assert official["default"]["full"] == pytest.approx(150 / 5)
    assert official["default"]["rare"] == pytest.approx(25.0)
    assert official["default"]["non_rare"] == pytest.approx(100 / 3)


def test_without_training_counts_rare_splits_are_none():
    vocab = HOIVocabulary.from_action_list(ACTIONS)
    records = all_classes_records()
    results = evaluate_hoi_detection(records, perfect(records), vocab, "fgahoi")
    assert results["default"]["full"] == pytest.approx(100.0)
    assert results["default"]["rare"] is None and results["per_class"][0]["rare"] is None


# -- 11-point AP -----------------------------------------------------------------------------------------
def test_eleven_point_ap_worked_example():
    """TP FP TP FP FP TP with 4 GT: recall .25 .25 .5 .5 .5 .75, precision 1 .5 .67 .5 .4 .5.

    t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 1/2; t = .8, .9, 1 -> 0: AP = 6/11.
    """
    tp = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    for protocol in PROTOCOLS:
        value, recall = class_ap(tp, 4, protocol)
        assert value == pytest.approx(6 / 11) and recall == 0.75
    records = [image("a.jpg", *[pair(0, (k * 100.0, 0.0, k * 100.0 + 80, 80.0), O1) for k in range(4)])]
    hits = [(0, True), (1, False), (1, True), (2, False), (3, False), (2, True)]
    dets = [
        det(0, 1.0 - 0.1 * i, (k * 100.0, 0.0, k * 100.0 + 80, 80.0) if good else (k * 100.0, 300.0, k * 100.0 + 20, 320.0), O1)
        for i, (k, good) in enumerate(hits)
    ]
    for protocol in PROTOCOLS:
        assert ap(evaluate(records, [dets], protocol), 0) == pytest.approx(100 * 6 / 11)


def test_recall_thresholds_differ_between_matlab_and_numpy():
    """A recall of exactly 3/5 reaches t = 0.6 in MATLAB's 0:0.1:1, not in np.arange(0, 1.1, 0.1)."""
    assert OFFICIAL_RECALL_THRESHOLDS[6] == 0.6 and FGAHOI_RECALL_THRESHOLDS[6] > 0.6
    assert OFFICIAL_RECALL_THRESHOLDS[3] == FGAHOI_RECALL_THRESHOLDS[3] == 3 * 0.1
    tp = np.ones(3, dtype=bool)
    assert class_ap(tp, 5, "official")[0] == pytest.approx(7 / 11)
    assert class_ap(tp, 5, "fgahoi")[0] == pytest.approx(6 / 11)
    assert eleven_point_ap(np.array([]), np.array([]), OFFICIAL_RECALL_THRESHOLDS) == 0.0


# -- fgahoi selection ---------------------------------------------------------------------------------------
def test_fgahoi_keeps_the_top_100_per_image():
    records = [image("a.jpg", pair(0))]
    boxes = [(float(10 * (k % 40)), float(10 * (k // 40)), float(10 * (k % 40) + 8), float(10 * (k // 40) + 8)) for k in range(101)]
    dets = [[det(2, 0.5 + 0.001 * k, b, b) for k, b in enumerate(boxes)] + [det(0, 0.1)]]  # the TP scores lowest
    results = evaluate(records, dets, "fgahoi")
    assert results["num_detections_evaluated"] == 100 and ap(results, 0) == 0.0
    assert ap(evaluate(records, dets, "official"), 0) == pytest.approx(100.0)
    assert ap(evaluate(records, dets, "fgahoi", max_per_image=None), 0) == pytest.approx(100.0)


def test_triplet_nms_suppresses_only_above_the_threshold():
    """Overlap = IoU_sub * IoU_obj with +1 areas: identical object boxes, subject IoU 0.5 vs 0.6."""
    records = [image("a.jpg", pair(0))]
    base = (0.0, 0.0, 9.0, 9.0)  # 10x10 with +1 areas
    half = (0.0, 0.0, 9.0, 4.0)  # inside base, 50 of 100 -> IoU 0.5
    more = (0.0, 0.0, 9.0, 5.0)  # 60 of 100 -> IoU 0.6
    kept = evaluate(records, [[det(0, 0.9, base, base), det(0, 0.8, half, base)]], "fgahoi")
    assert kept["num_detections_evaluated"] == 2
    dropped = evaluate(records, [[det(0, 0.9, base, base), det(0, 0.8, more, base)]], "fgahoi")
    assert dropped["num_detections_evaluated"] == 1
    # only kept detections suppress: b is dropped by a, so c (close to b, not to a) survives.
    # Same subject and object boxes, so overlap = IoU^2: a-b (90/110)^2 = .67, b-c .67, a-c (80/120)^2 = .44
    a, b, c = (0.0, 0.0, 99.0, 99.0), (10.0, 0.0, 109.0, 99.0), (20.0, 0.0, 119.0, 99.0)
    chain = evaluate(records, [[det(0, 0.9, a, a), det(0, 0.8, b, b), det(0, 0.7, c, c)]], "fgahoi")
    assert chain["num_detections_evaluated"] == 2


def test_arrays_and_per_image_lists_agree():
    records = all_classes_records()
    dets = perfect(records)
    dets[0].append(det(2, 0.3, FAR, FAR))
    arrays = DetectionArrays.from_per_image(dets)
    for protocol in PROTOCOLS:
        assert evaluate(records, dets, protocol) == evaluate(records, arrays, protocol)


def test_bad_inputs_are_clear_errors():
    records = all_classes_records()
    with pytest.raises(ValueError, match="hoi 7 outside"):
        evaluate(records, [[det(7, 0.5)], []], "official")
    with pytest.raises(ValueError, match="2 GT images"):
        evaluate(records, [[]], "official")
    with pytest.raises(ValueError, match="score is not finite"):
        evaluate(records, [[det(0, math.nan)], []], "fgahoi")
    with pytest.raises(ValueError, match="unknown protocol"):
        HOIEvaluator(records, VOCAB, "voc")
    with pytest.raises(ValueError, match="known_object mask"):
        HOIEvaluator(records, VOCAB, "official", known_object=np.ones((2, 2), dtype=bool))


# -- properties -----------------------------------------------------------------------------------------------
def random_case(seed: int, num_images: int, per_image: int):
    """GT on a few images and detections: jittered GT copies (TPs, near misses, duplicates) and noise."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(num_images):
        pairs = []
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.integers(0, 300, 4).astype(float)
            human = (xy[0], xy[1], xy[0] + rng.integers(20, 120), xy[1] + rng.integers(20, 120))
            obj = (xy[2], xy[3], xy[2] + rng.integers(20, 120), xy[3] + rng.integers(20, 120))
            pairs.append(pair(int(rng.integers(0, VOCAB.num_classes)), human, obj))
        records.append(image(f"{k}.jpg", *pairs))
    image_idx, hoi, human, obj = [], [], [], []
    for k, record in enumerate(records):
        for _ in range(per_image):
            if record.pairs and rng.random() < 0.7:
                p = record.pairs[int(rng.integers(len(record.pairs)))]
                sigma = rng.choice([2.0, 6.0, 15.0])  # duplicates for NMS, TPs, near misses
                h = np.array(p.human_box) + rng.normal(0, sigma, 4)
                o = np.array(p.object_box) + rng.normal(0, sigma, 4)
                c = p.hoi if rng.random() < 0.8 else int(rng.integers(0, VOCAB.num_classes))
            else:
                xy = rng.uniform(0, 300, 4)
                h, o = np.r_[xy[:2], xy[:2] + 60], np.r_[xy[2:], xy[2:] + 60]
                c = int(rng.integers(0, VOCAB.num_classes))
            image_idx.append(k)
            hoi.append(c)
            human.append(np.r_[np.minimum(h[:2], h[2:]), np.maximum(h[:2], h[2:])])
            obj.append(np.r_[np.minimum(o[:2], o[2:]), np.maximum(o[:2], o[2:])])
    n = len(hoi)
    scores = (rng.permutation(n) + 1) / (n + 1)  # distinct
    return records, DetectionArrays(image_idx, hoi, np.array(human).reshape(-1, 4), np.array(obj).reshape(-1, 4), scores)


CASES = dict(seed=st.integers(0, 2**32 - 1), num_images=st.integers(1, 6), per_image=st.integers(3, 16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**CASES, shuffle_seed=st.integers(0, 2**32 - 1))
def test_row_order_does_not_matter_when_scores_are_distinct(seed, num_images, per_image, shuffle_seed):
    records, dets = random_case(seed, num_images, per_image)
    shuffled = dets.take(np.random.default_rng(shuffle_seed).permutation(len(dets)))
    for protocol in PROTOCOLS:
        kwargs = {"max_per_image": 8} if protocol == "fgahoi" else {}  # make top-k bite too
        assert evaluate(records, dets, protocol, **kwargs) == evaluate(records, shuffled, protocol, **kwargs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**CASES, where=st.integers(0, 10**6))
def test_a_false_positive_below_every_score_never_raises_ap(seed, num_images, per_image, where):
    records, dets = random_case(seed, num_images, per_image)
    gt_classes = sorted({p.hoi for r in records for p in r.pairs})
    if not gt_classes:
        return
    k = where % num_images
    c = gt_classes[where % len(gt_classes)]
    low = (dets.scores.min() / 2) if len(dets) else 0.5
    far = [[-500.0, -500.0, -400.0, -400.0]]
    extra = DetectionArrays(
        np.r_[dets.image, k], np.r_[dets.hoi, c], np.r_[dets.human_boxes, far], np.r_[dets.object_boxes, far],
        np.r_[dets.scores, low],
    )
    for protocol in PROTOCOLS:
        before, after = evaluate(records, dets, protocol), evaluate(records, extra, protocol)
        for row_before, row_after in zip(before["per_class"], after["per_class"]):
            if row_before["num_gt"]:
                assert row_after["ap"] <= row_before["ap"] + 1e-9
        for setting in ("default", "known_object"):
            assert after[setting]["full"] <= before[setting]["full"] + 1e-9


def test_fgahoi_quirk_a_detection_in_a_class_without_gt_can_raise_the_mean():
    """The reason the property above adds its false positive to a class with GT."""
    records = [image("a.jpg", pair(0))]
    before = evaluate(records, [[det(0, 0.9)]], "fgahoi")
    after = evaluate(records, [[det(0, 0.9), det(2, 0.1, FAR, FAR)]], "fgahoi")
    assert before["default"]["full"] == pytest.approx(100 / 5)
    assert after["default"]["full"] == pytest.approx(100 / 4)


# -- the vectorised code against plain transcriptions of the two reference algorithms ---------------
def _official_iou(a, b):
    """``VOCevaldet_bboxpair.m``, one pair, Python floats."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw > 0 and ih > 0:
        ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
        return iw * ih / ua
    return 0.0


def _fgahoi_area(x1, y1, x2, y2):
    return 0.0 if (x2 <= x1 or y2 <= y1) else (x2 - x1 + 1) * (y2 - y1 + 1)


def _fgahoi_iou(a, b):
    inter = _fgahoi_area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return inter / (_fgahoi_area(*a) + _fgahoi_area(*b) - inter + 1e-6)


def _nms_iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    return inter, (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter


def _ap(tp, npos, thresholds):
    ap, tps, fps, rec, prec = 0.0, 0, 0, [], []
    for t in tp:
        tps, fps = tps + t, fps + (not t)
        rec.append(tps / npos)
        prec.append(tps / (tps + fps))
    for th in thresholds:
        ps = [p for r, p in zip(rec, prec) if r >= th]
        ap = ap + (max(ps) if ps else 0) / 11.0
    return ap


def reference_official(records, per_image, known):
    """ho-rcnn, class by class; detections +1, GT 1-based = (x1 + 1, y1 + 1, x2, y2)."""
    thresholds = [k * 0.1 if k <= 5 else 1 - (10 - k) * 0.1 for k in range(11)]
    out = []
    for c in range(VOCAB.num_classes):
        images = [k for k in range(len(records)) if known is None or known[VOCAB.classes[c].object, k]]
        gt = {k: [((p.human_box[0] + 1, p.human_box[1] + 1, p.human_box[2], p.human_box[3]),
                   (p.object_box[0] + 1, p.object_box[1] + 1, p.object_box[2], p.object_box[3]))
                  for p in records[k].pairs if p.hoi == c] for k in images}
        dets = [(k, [v + 1 for v in d.human_box], [v + 1 for v in d.object_box], d.score)
                for k in images for d in per_image[k] if d.hoi == c]
        dets = sorted(dets, key=lambda d: -d[3])  # stable, like MATLAB's sort(-conf)
        matched = {k: [False] * len(g) for k, g in gt.items()}
        tp = []
        for k, h, o, _ in dets:
            ov_max, j_max = -math.inf, None
            for j, (gh, go) in enumerate(gt[k]):
                ov = min(_official_iou(h, gh), _official_iou(o, go))
                if ov > ov_max:
                    ov_max, j_max = ov, j
            hit = ov_max >= 0.5 and not matched[k][j_max]
            if hit:
                matched[k][j_max] = True
            tp.append(hit)
        npos = sum(len(g) for g in gt.values())
        out.append(0.0 if not dets or npos == 0 else _ap(tp, npos, thresholds))
    return out


def reference_fgahoi(records, per_image, known, top_k=100, nms=0.5):
    """GGNet/QAHOI/FGAHOI: top-k, triplet NMS, first free GT with both IoUs > 0.5; GT int(v - 1)."""
    kept = []
    for dets in per_image:
        dets = sorted(dets, key=lambda d: -d.score)[:top_k]
        groups = {}
        for d in dets:
            groups.setdefault(d.hoi, []).append(d)
        survivors = []
        for group in groups.values():
            order = sorted(range(len(group)), key=lambda i: -group[i].score)
            keep = []
            while order:
                i = order[0]
                keep.append(i)
                rest = []
                for j in order[1:]:
                    si, su = _nms_iou(group[i].human_box, group[j].human_box)
                    oi, ou = _nms_iou(group[i].object_box, group[j].object_box)
                    if not si / su * oi / ou > nms:
                        rest.append(j)
                order = rest
            survivors += [group[i] for i in keep]
        kept.append(survivors)
    out = []
    for c in range(VOCAB.num_classes):
        y_true, y_score, npos = [], [], 0
        for k, record in enumerate(records):
            if known is not None and not known[VOCAB.classes[c].object, k]:
                continue
            gts = [([math.trunc(v) for v in (p.human_box[0], p.human_box[1], p.human_box[2] - 1, p.human_box[3] - 1)],
                    [math.trunc(v) for v in (p.object_box[0], p.object_box[1], p.object_box[2] - 1, p.object_box[3] - 1)])
                   for p in record.pairs if p.hoi == c]
            npos += len(gts)
            for d in sorted([d for d in kept[k] if d.hoi == c], key=lambda d: -d.score):
                hit = False
                for i, (gh, go) in enumerate(gts):
                    if _fgahoi_iou(d.human_box, gh) > 0.5 and _fgahoi_iou(d.object_box, go) > 0.5:
                        hit = True
                        del gts[i]
                        break
                y_true.append(hit)
                y_score.append(d.score)
        tp = [t for t, _ in sorted(zip(y_true, y_score), key=lambda x: x[1], reverse=True)]
        if not tp:
            out.append(0.0)
        elif npos == 0:
            out.append(math.nan)
        else:
            out.append(_ap(tp, npos, [float(t) for t in np.arange(0, 1.1, 0.1)]))
    return out


def per_image_lists(dets: DetectionArrays, num_images: int) -> list[list[HOIDetection]]:
    out = [[] for _ in range(num_images)]
    for k in range(len(dets)):
        out[int(dets.image[k])].append(HOIDetection(
            tuple(dets.human_boxes[k].tolist()), tuple(dets.object_boxes[k].tolist()), int(dets.hoi[k]), float(dets.scores[k])
        ))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**CASES, integral=st.booleans(), tie_decimals=st.sampled_from([1, 2, 6]))
def test_vectorised_protocols_equal_the_reference_loops(seed, num_images, per_image, integral, tie_decimals):
    """Exact per-class AP (Default and Known Object), with score ties and integer boxes that hit the
    IoU boundaries; top-k set low so that it bites."""
    records, dets = random_case(seed, num_images, per_image)
    scores = np.round(dets.scores, tie_decimals)
    boxes = (np.round(dets.human_boxes), np.round(dets.object_boxes)) if integral else (dets.human_boxes, dets.object_boxes)
    dets = DetectionArrays(dets.image, dets.hoi, boxes[0], boxes[1], scores)
    lists = per_image_lists(dets, num_images)
    for protocol in PROTOCOLS:
        evaluator = HOIEvaluator(records, VOCAB, protocol, max_per_image=10)
        results = evaluator.evaluate(dets)
        for known, key in ((None, "ap"), (evaluator.known_object, "ap_known_object")):
            if protocol == "official":
                expected = reference_official(records, lists, known)
            else:
                expected = reference_fgahoi(records, lists, known, top_k=10)
            assert [row[key] for row in results["per_class"]] == [
                None if math.isnan(v) else 100.0 * v for v in expected
            ], (protocol, key)
