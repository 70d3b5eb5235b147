"""Refinement's choice of plans to measure: one per distinct configured network."""

import lmzoo
from lmzoo.pipeline.refine import distinct_networks
from lmzoo.tables import ImportanceTable, LatencyTable
from tests.test_committed_cards import CARDS


def test_distinct_networks_keep_the_fastest_plan_of_each_configuration():
    """On MobileNetV2's committed tables the 1.6x top plans include plans that only merge 1x1
    convs differently (same function, other latency): each configuration is measured once, as its
    fastest plan, in the order of its best rank."""
    tables = CARDS / "mobilenetv2-fmnist-layermerge-1.6x" / "tables"
    latency = LatencyTable.load(tables / "latency.json")
    importance = ImportanceTable.load(tables / "importance.json")
    spec = latency.spec
    ranked = lmzoo.top_plans(latency, importance, k=18, speedup=1.6, objective="product")
    distinct = distinct_networks(ranked, spec, latency)
    assert len(distinct) < len(ranked)  # the tables' top plans do repeat networks
    configurations = [p.plan.configuration(spec) for _, p in distinct]
    assert len(set(configurations)) == len(distinct)
    firsts = []
    for configuration in configurations:
        group = [(r, p) for r, p in enumerate(ranked, 1) if p.plan.configuration(spec) == configuration]
        firsts.append(group[0][0])
        (rank, chosen) = next(d for d in distinct if d[1].plan.configuration(spec) == configuration)
        assert ranked[rank - 1] is chosen
        assert latency.predict(chosen.plan) == min(latency.predict(p.plan) for _, p in group)
    assert firsts == sorted(firsts)
    assert {p.plan.configuration(spec) for p in ranked} == set(configurations)
