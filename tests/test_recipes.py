import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmzoo.recipes import RecipeError, load_recipe, parse_recipe, recipe_files

RECIPES = recipe_files()["mobilenetv2-fmnist-layermerge"].parent

GOOD = """
name: tiny-fmnist-layermerge
model: {source: timm, arch: mobilenetv2_035, kwargs: {num_classes: 10, in_chans: 1}, input_size: 32}
data: {dataset: fashion-mnist, pad_to: 32}
solve: {speedups: [1.5, 2]}
profiles:
  smoke: {data: {limit_train: 64}, base: {epochs: 0.5}}
"""


def _write(tmp_path, text, name="tiny-fmnist-layermerge.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_recipes_parse_in_every_profile():
    files = recipe_files()
    assert "mobilenetv2-fmnist-layermerge" in files
    for path in files.values():
        recipe = parse_recipe(path)
        assert recipe.solve.speedups and recipe.name == path.stem
        smoke = parse_recipe(path, "smoke")
        assert smoke.profile == "smoke" and smoke.data.limit_train


def test_an_entry_name_resolves_to_its_recipe_and_speedup():
    recipe, speedup = load_recipe("mobilenetv2-fmnist-layermerge-1.6x")
    assert speedup == 1.6 and recipe.name == "mobilenetv2-fmnist-layermerge" and recipe.profile == "default"
    assert "mobilenetv2-fmnist-layermerge-1.6x" in recipe.entries()
    with pytest.raises(RecipeError, match=r"is not one of its entries .* --speedup 9`"):
        load_recipe("mobilenetv2-fmnist-layermerge-9x")
    custom, speedup = load_recipe("mobilenetv2-fmnist-layermerge-1.7x", extra_speedups=True)
    assert speedup == 1.7 and custom.entry_name(1.7) == "mobilenetv2-fmnist-layermerge-1.7x"
    with pytest.raises(RecipeError, match="did you mean mobilenetv2-fmnist-layermerge"):
        load_recipe("mobilenetv2-fmnist-layermerg")


def test_a_profile_build_is_named_apart_from_the_zoo_entry():
    """A smoke (or any non-default profile) build is <entry>-<profile>: it never lands under the
    entry's name, and that name resolves back to the recipe, profile and speed-up."""
    smoke, speedup = load_recipe("mobilenetv2-fmnist-layermerge-1.6x", "smoke")
    assert speedup == 1.6 and smoke.profile == "smoke"
    assert smoke.entry_name(1.6) == "mobilenetv2-fmnist-layermerge-1.6x-smoke"
    assert "mobilenetv2-fmnist-layermerge-1.6x" not in smoke.entries()
    again, speedup = load_recipe("mobilenetv2-fmnist-layermerge-1.6x-smoke")
    assert (again.profile, speedup) == ("smoke", 1.6) and again == smoke
    depth, _ = load_recipe("resnet34-fmnist-depth-1.05x-smoke")
    assert depth.solve.method == "depth" and depth.entry_name(1.05) == "resnet34-fmnist-depth-1.05x-smoke"
    with pytest.raises(RecipeError, match="names the smoke profile, not paper-importance"):
        load_recipe("mobilenetv2-fmnist-layermerge-1.6x-smoke", "paper-importance")
    with pytest.raises(RecipeError, match="no profile 'fast'"):
        load_recipe("mobilenetv2-fmnist-layermerge-1.6x-fast")
    # the zoo's entries are the default profile's, for every method
    zoo = load_recipe("resnet34-fmnist-layermerge", "smoke")[0].zoo_entries()
    assert zoo["resnet34-fmnist-layer-2x"] == ("layer", 2.0) and len(zoo) == 13  # 3 x 4 + depth's one


def test_profile_names_are_checked(tmp_path):
    text = (RECIPES / "mobilenetv2-fmnist-layermerge.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("  smoke:", "  Smoke Test:"))
    with pytest.raises(RecipeError, match="profile name 'Smoke Test' must be lower-case"):
        parse_recipe(path)


def test_baseline_entry_names_resolve_to_their_recipe_and_method():
    for method, target in (("depth", 1.05), ("layer", 1.6), ("layermerge-union", 1.6)):
        recipe, speedup = load_recipe(f"resnet34-fmnist-{method}-{target:g}x")
        assert (recipe.name, recipe.solve.method, speedup) == ("resnet34-fmnist-layermerge", method, target)
        assert recipe.entry_name(target) == f"resnet34-fmnist-{method}-{target:g}x"
    recipe, _ = load_recipe("resnet34-fmnist-layermerge", method="depth")
    assert recipe.entries() == ["resnet34-fmnist-depth-1.05x"]  # solve.method_speedups.depth
    assert load_recipe("resnet34-fmnist-layermerge", method="layer")[0].entries() == [
        "resnet34-fmnist-layer-1.15x",
        "resnet34-fmnist-layer-1.3x",
        "resnet34-fmnist-layer-1.6x",
        "resnet34-fmnist-layer-2x",
    ]
    assert load_recipe("resnet34-fmnist-layermerge-1.6x")[0].solve.method == "layermerge"
    with pytest.raises(RecipeError, match="names the depth method, not layer"):
        load_recipe("resnet34-fmnist-depth-1.05x", method="layer")
    with pytest.raises(RecipeError, match="no recipe named"):
        load_recipe("resnet34-fmnist-pruned-1.6x")
    with pytest.raises(RecipeError, match="unknown method"):
        load_recipe("resnet34-fmnist-layermerge", method="magic")


def test_profiles_merge_over_the_defaults(tmp_path):
    path = _write(tmp_path, GOOD)
    default, smoke = parse_recipe(path), parse_recipe(path, "smoke")
    assert default.data.limit_train is None and smoke.data.limit_train == 64
    assert smoke.data.pad_to == 32 and smoke.base.epochs == 0.5 and smoke.base.lr == default.base.lr
    assert default.solve.speedups == (1.5, 2.0)
    with pytest.raises(RecipeError, match="no profile 'fast'; this recipe has: default, smoke"):
        parse_recipe(path, "fast")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("data: {dataset: fashion-mnist, pad_to: 32}", "data: {dataset: fashion-mnist, pad: 32}"),
            "unknown key 'data.pad'",
        ),
        (("pad_to: 32}", "pad_to: thirty}"), "'data.pad_to' must be an integer, got str 'thirty'"),
        (("speedups: [1.5, 2]", "speedups: 1.5"), "'solve.speedups' must be a list"),
        (("speedups: [1.5, 2]", "speedups: [0.5]"), "solve.speedups: each must be a number above 1"),
        (
            ("speedups: [1.5, 2]", "speedups: [1.5], objective: max"),
            "solve.objective must be one of sum, product",
        ),
        (
            ("source: timm", "source: keras"),
            "unknown model source 'keras'; choose one of diffusers, python, timm, torchvision",
        ),
        (("source: timm", "family: keras"), "model.family: unknown model family 'keras'"),
        (("arch: mobilenetv2_035", "arch: 'hf-hub:timm/x'"), "a location, not an architecture name"),
        (
            ("source: timm, arch: mobilenetv2_035", "source: diffusers, arch: Autoencoder"),
            "not a diffusers class",
        ),
        (
            ("input_size: 32}", "input_size: 32}\nlatency: {batch_size: 0}"),
            "'latency.batch_size' must be from 1 to 65536",
        ),
        (("name: tiny-fmnist-layermerge\n", ""), "missing key 'name'"),
        (("base: {epochs: 0.5}", "base: {epochs: [1]}"), "'base.epochs' must be a number"),
        (("smoke:", "smoke: 3\n  x:"), "'profiles' must map profile names"),
        (
            ("speedups: [1.5, 2]", "speedups: [1.5], method_speedups: {magic: [1.2]}"),
            "solve.method_speedups names methods: layermerge",
        ),
        (
            ("speedups: [1.5, 2]", "speedups: [1.5], method_speedups: {depth: [0.9]}"),
            "solve.method_speedups.depth: each must be a number above 1",
        ),
        (
            ("speedups: [1.5, 2]", "speedups: [1.5], method_speedups: {depth: 1.2}"),
            "'solve.method_speedups.depth' must be a list",
        ),
    ],
)
def test_bad_recipes_name_the_key_and_the_file(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RecipeError, match=message) as err:
        parse_recipe(path)
    assert str(path) in str(err.value)


def test_recipes_of_earlier_versions_name_a_family_and_still_parse(tmp_path):
    legacy = parse_recipe(_write(tmp_path, GOOD.replace("source: timm", "family: timm")))
    assert legacy.model == parse_recipe(_write(tmp_path, GOOD, name="again.yaml")).model
    unet = GOOD.replace("source: timm, arch: mobilenetv2_035", "family: diffusers-unet2d")
    assert parse_recipe(_write(tmp_path, unet, name="unet.yaml")).model.architecture.arch == "UNet2DModel"


def test_unreadable_recipes(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        parse_recipe(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        parse_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="no recipe named 'nothing-like-it'"):
        load_recipe("nothing-like-it")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(RecipeError, match="is not UTF-8 text"):
        parse_recipe(tmp_path / "binary.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    with pytest.raises(RecipeError, match=r"is a link to /dev/zero|is not a regular file"):
        parse_recipe(tmp_path / "zero.yaml")
    (tmp_path / "huge.yaml").write_text("# " + "x" * (2 << 20))
    with pytest.raises(RecipeError, match="more than the 1048576 an lmzoo file can be"):
        parse_recipe(tmp_path / "huge.yaml")


def test_a_stray_file_never_shadows_a_recipe_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mobilenetv2-fmnist-layermerge").write_text("")
    (tmp_path / "mobilenetv2-fmnist-layermerge-1.6x").write_text("")
    assert load_recipe("mobilenetv2-fmnist-layermerge")[0].name == "mobilenetv2-fmnist-layermerge"
    assert load_recipe("mobilenetv2-fmnist-layermerge-1.6x")[1] == 1.6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("base: {epochs: 0.5}", "base: {epochs: .inf}"), "'base.epochs' must be a finite number"),
        (("base: {epochs: 0.5}", "base: {epochs: -1}"), "'base.epochs' must be from 0 to 10000"),
        (("base: {epochs: 0.5}", "base: {batch_size: 0}"), "'base.batch_size' must be from 1"),
        (("base: {epochs: 0.5}", "base: {batch_size: -5}"), "'base.batch_size' must be from 1"),
        (("base: {epochs: 0.5}", "base: {lr: -0.1}"), "'base.lr' must be from 0 to 10"),
        (("base: {epochs: 0.5}", "base: {warmup_steps: -3}"), "'base.warmup_steps' must be from 0"),
        (("base: {epochs: 0.5}", "base: {distill_weight: 5}"), "'base.distill_weight' must be from 0 to 1"),
        (("base: {epochs: 0.5}", "importance: {eval_batch_size: 0}"), "'importance.eval_batch_size'"),
        (("name: tiny", "seed: 1180591620717411303424\nname: tiny"), "'seed' is too large"),
        (("name: tiny", "seed: -1\nname: tiny"), "'seed' must be from 0 to 4.29497e\\+09"),
        (("pad_to: 32", "pad_to: -4"), "'data.pad_to' must be from 1 to 2048"),
        (("pad_to: 32", "pad_to: 100000"), "'data.pad_to' must be from 1 to 2048"),
        (("in_chans: 1", "in_chans: 0"), "model.kwargs.in_chans must be an integer from 1 to 64"),
        (("num_classes: 10", "num_classes: -1"), "model.kwargs.num_classes must be an integer from 1"),
        (("speedups: [1.5, 2]", "speedups: [1.5], levels: 1000000000"), "'solve.levels' must be from 1"),
        (("speedups: [1.5, 2]", "speedups: [1.6, 1.60]"), "two name the same entry"),
        (("speedups: [1.5, 2]", "speedups: [1.0e+9]"), "at most 100"),
        (("speedups: [1.5, 2]", "speedups: [1.0000001]"), "at most 6 significant digits"),
        (
            ("base: {epochs: 0.5}", "importance: {train_fraction: 0.7, heldout_fraction: 0.7}"),
            "must be at most 1 \\(disjoint subsets\\)",
        ),
        (("solve: {speedups: [1.5, 2]}", "solve: {speedups: [1.5, 2]}\nsolve: {}"), "'solve' is given twice"),
        (("base: {epochs: 0.5}", "base: {epochs: 0.5, epochs: 2}"), "'epochs' is given twice"),
    ],
)
def test_values_out_of_their_range_are_refused(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(RecipeError, match=message):
        parse_recipe(_write(tmp_path, GOOD.replace(old, new)))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 9):
        bomb += f"{chr(97 + level)}: &{chr(97 + level)} [{', '.join([f'*{chr(96 + level)}'] * 10)}]\n"
    text = GOOD.replace(
        "kwargs: {num_classes: 10, in_chans: 1}", "kwargs: {num_classes: 10, in_chans: 1, x: *i}"
    )
    start = time.monotonic()
    with pytest.raises(RecipeError, match="expands to more than 100,000 values"):
        parse_recipe(
            _write(tmp_path, "anchors:\n" + "".join(f"  {line}" for line in bomb.splitlines(True)) + text)
        )
    assert time.monotonic() - start < 2
    # YAML merge keys may still override what they merge (not a key given twice)
    merged = GOOD.replace("solve:", "base: &b {lr: 0.05, epochs: 0.5}\nfinetune: {<<: *b, epochs: 1}\nsolve:")
    recipe = parse_recipe(_write(tmp_path, merged))
    assert (recipe.finetune.lr, recipe.finetune.epochs, recipe.base.epochs) == (0.05, 1.0, 0.5)


SECTIONS = {
    "base": ["lr", "epochs", "batch_size", "warmup_steps", "distill_weight", "momentum", "ema_decay"],
    "importance": ["seed", "eval_batch_size", "block_steps", "train_fraction"],
    "solve": ["levels", "max_kernel"],
    "latency": ["batch_size", "runs", "threads"],
    "evaluate": ["sample_count", "frechet_samples"],
}


@given(
    data=st.data(),
    value=st.one_of(
        st.integers(-(2**80), 2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, -1, 1, 2**31, 2**63, 1e308, -0.0, 5e-324]),
    ),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_number_anywhere_parses_within_its_range_or_is_one_recipe_error(tmp_path, data, value):
    import json

    from lmzoo.recipes import RANGES

    section = data.draw(st.sampled_from(sorted(SECTIONS)))
    key = data.draw(st.sampled_from(SECTIONS[section]))
    text = GOOD.replace("profiles:", f"{section}: {{{key}: {json.dumps(value)}}}\nprofiles:")
    text = text.replace("base: {epochs: 0.5}", "{}") if section == "base" else text
    try:
        recipe = parse_recipe(_write(tmp_path, text))
    except RecipeError as err:
        assert "Traceback" not in str(err) and len(str(err).splitlines()) == 1
        return
    parsed = getattr(getattr(recipe, section), key)
    low, high = RANGES[key]
    assert low <= parsed <= high and parsed == value


def test_the_baselines_solve_with_their_official_objectives(tmp_path):
    """Layer pruning's entries maximise what its official code does (the kept convs' knapsack), depth
    compression's Kim et al. 2023's normalised additive importance, unless the recipe's
    solve.layer_objective / depth_objective say otherwise; the other methods keep solve.objective."""
    recipe = parse_recipe(
        _write(tmp_path, GOOD.replace("speedups: [1.5, 2]", "speedups: [1.5], objective: product"))
    )
    assert (recipe.solve.objective, recipe.with_method("layer").solve.objective) == ("product", "kept")
    assert recipe.with_method("depth").solve.objective == "normalized"
    assert recipe.with_method("layermerge-union").solve.objective == "product"
    text = GOOD.replace("speedups: [1.5, 2]", "speedups: [1.5], depth_objective: 'normalized:1.6'")
    assert parse_recipe(_write(tmp_path, text)).with_method("depth").solve.objective == "normalized:1.6"
    assert load_recipe("mobilenetv2-fmnist-depth-1.6x")[0].solve.objective == "normalized:1.6"
    for bad in ("normalized:-1", "normalized:x", "kept", "normalized:1e9"):
        text = GOOD.replace("speedups: [1.5, 2]", f"speedups: [1.5], depth_objective: '{bad}'")
        with pytest.raises(RecipeError, match=r"solve\.depth_objective must be normalized"):
            parse_recipe(_write(tmp_path, text))
    with pytest.raises(RecipeError, match="'normalized\\[:ALPHA\\]' for method depth only"):
        parse_recipe(
            _write(tmp_path, GOOD.replace("speedups: [1.5, 2]", "speedups: [1.5], objective: normalized"))
        )
    text = GOOD.replace("speedups: [1.5, 2]", "speedups: [1.5], layer_objective: product")
    assert parse_recipe(_write(tmp_path, text)).with_method("layer").solve.objective == "product"
    with pytest.raises(RecipeError, match="'kept' for method layer only"):
        parse_recipe(_write(tmp_path, GOOD.replace("speedups: [1.5, 2]", "speedups: [1.5], objective: kept")))
    assert load_recipe("resnet34-fmnist-layer-1.6x")[0].solve.objective == "kept"


def test_a_method_can_have_its_own_targets(tmp_path):
    """solve.method_speedups: a baseline whose fastest plan lies below the recipe's targets lists its
    own (or none), and only those are its entries, its default build and what its names resolve to."""
    text = GOOD.replace(
        "speedups: [1.5, 2]", "speedups: [1.5, 2], method_speedups: {depth: [1.05], layer: []}"
    )
    recipe = parse_recipe(_write(tmp_path, text))
    entries = recipe.zoo_entries()
    assert entries["tiny-fmnist-depth-1.05x"] == ("depth", 1.05)
    assert "tiny-fmnist-depth-1.5x" not in entries and not any("-layer-" in n for n in entries)
    assert entries["tiny-fmnist-layermerge-2x"] == ("layermerge", 2.0)
    assert entries["tiny-fmnist-layermerge-union-1.5x"] == ("layermerge-union", 1.5)
    assert recipe.entries() == ["tiny-fmnist-layermerge-1.5x", "tiny-fmnist-layermerge-2x"]
    assert recipe.with_method("depth").entries() == ["tiny-fmnist-depth-1.05x"]
    assert recipe.with_method("layer").entries() == []
    assert recipe.solve.speedups_of("layermerge") == (1.5, 2.0)
    # the shipped ResNet-34 recipe: its depth entry resolves by name, the unreachable ones do not
    assert load_recipe("resnet34-fmnist-depth-1.05x")[1] == 1.05
    with pytest.raises(
        RecipeError,
        match=r"'resnet34-fmnist-depth-1.6x' is not one of its entries \(resnet34-fmnist-depth-1.05x\); "
        r"build another speed-up of it with `lmzoo build resnet34-fmnist-layermerge --method depth "
        r"--speedup 1.6`",
    ):
        load_recipe("resnet34-fmnist-depth-1.6x")
