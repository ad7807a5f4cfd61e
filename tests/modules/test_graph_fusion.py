import torch

from mmfusion.modules.graph_fusion import GraphFusion


def test_graph_weights_sum_to_one_over_neighbours():
    fused, xi = GraphFusion(5)(torch.randn(4, 3, 5))
    assert fused.shape == (4, 5)
    torch.testing.assert_close(xi.sum(-1), torch.ones(4, 3))
    assert (torch.diagonal(xi, dim1=1, dim2=2) == 0).all()


def test_graph_fusion_leaves_a_missing_modality_out_as_if_it_had_no_node():
    torch.manual_seed(0)
    graph = GraphFusion(5)
    nodes = torch.randn(4, 3, 5)
    present = torch.ones(4, 3, dtype=torch.bool)
    present[1, 1] = False  # clip 1 has no vision
    present[2, [0, 2]] = False  # clip 2 has vision only
    fused, xi = graph(nodes, present)
    full, _ = graph(nodes)
    torch.testing.assert_close(fused[[0, 3]], full[[0, 3]])
    two, _ = graph(nodes[1:2, [0, 2]])  # the same weights on the 2-node graph of clip 1's present modalities
    torch.testing.assert_close(fused[1], two[0])
    assert (xi[1, :, 1] == 0).all() and torch.allclose(xi[1, [0, 2]].sum(-1), torch.ones(2))
    # a lone node has no neighbour: Σ_j over nothing is 0 and σ(0) = 1/2 in every dimension
    torch.testing.assert_close(fused[2], torch.full((5,), 0.5))
    # nothing of a missing node reaches the output
    moved = nodes.clone()
    moved[1, 1] += 10
    torch.testing.assert_close(graph(moved, present)[0], fused)
