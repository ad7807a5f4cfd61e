from mmfusion.models import build


def test_tfn_fuses_by_outer_product():
    model = build("tfn_tiny", {"text": 3, "vision": 2, "audio": 2}, 1)
    assert model.head[1].in_features == (4 + 1) * (3 + 1) * (2 + 1)
