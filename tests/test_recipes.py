import pytest

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
    depth, _ = load_recipe("resnet34-fmnist-depth-1.3x-smoke")
    assert depth.solve.method == "depth" and depth.entry_name(1.3) == "resnet34-fmnist-depth-1.3x-smoke"
    with pytest.raises(RecipeError, match="names the smoke profile, not paper-importance"):
        load_recipe("mobilenetv2-fmnist-layermerge-1.6x-smoke", "paper-importance")
    with pytest.raises(RecipeError, match="no profile 'fast'"):
        load_recipe("mobilenetv2-fmnist-layermerge-1.6x-fast")
    # the zoo's entries are the default profile's, for every method
    zoo = load_recipe("resnet34-fmnist-layermerge", "smoke")[0].zoo_entries()
    assert zoo["resnet34-fmnist-layer-2x"] == ("layer", 2.0) and len(zoo) == 16


def test_profile_names_are_checked(tmp_path):
    text = (RECIPES / "mobilenetv2-fmnist-layermerge.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("  smoke:", "  Smoke Test:"))
    with pytest.raises(RecipeError, match="profile name 'Smoke Test' must be lower-case"):
        parse_recipe(path)


def test_baseline_entry_names_resolve_to_their_recipe_and_method():
    for method in ("depth", "layer", "layermerge-union"):
        recipe, speedup = load_recipe(f"resnet34-fmnist-{method}-1.6x")
        assert (recipe.name, recipe.solve.method, speedup) == ("resnet34-fmnist-layermerge", method, 1.6)
        assert recipe.entry_name(1.6) == f"resnet34-fmnist-{method}-1.6x"
    recipe, _ = load_recipe("resnet34-fmnist-layermerge", method="depth")
    assert recipe.entries() == [
        "resnet34-fmnist-depth-1.15x",
        "resnet34-fmnist-depth-1.3x",
        "resnet34-fmnist-depth-1.6x",
        "resnet34-fmnist-depth-2x",
    ]
    assert load_recipe("resnet34-fmnist-layermerge-1.6x")[0].solve.method == "layermerge"
    with pytest.raises(RecipeError, match="names the depth method, not layer"):
        load_recipe("resnet34-fmnist-depth-1.6x", method="layer")
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
        (("speedups: [1.5, 2]", "speedups: [0.5]"), "solve.speedups must all be > 1"),
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
            "latency: batch_size must be a positive integer",
        ),
        (("name: tiny-fmnist-layermerge\n", ""), "missing key 'name'"),
        (("base: {epochs: 0.5}", "base: {epochs: [1]}"), "'base.epochs' must be a number"),
        (("smoke:", "smoke: 3\n  x:"), "'profiles' must map profile names"),
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
    with pytest.raises(RecipeError, match="cannot read recipe"):
        parse_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="no recipe named 'nothing-like-it'"):
        load_recipe("nothing-like-it")
