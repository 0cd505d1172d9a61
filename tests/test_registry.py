"""The model registry: every family's variants registered once, with what each can do, asked by the commands."""

from __future__ import annotations

import inspect

import pytest
import timm
import torch

import replknet
from replknet.deploy.bench import build_bench_model
from replknet.models import _registry


def test_every_variant_has_exactly_one_explicit_factory():
    for family_name in replknet.list_families():
        names = replknet.list_models(family=family_name)
        family = replknet.get_model_info(names[0]).family
        assert sorted(family.configs) == names
        for name in names:
            # timm's registry holds the factory under the variant's own name, defined with that name in the family's
            # module (an explicit `def NAME(...)`, greppable).
            factory = timm.models.model_entrypoint(name)
            assert factory.__name__ == name
            source = inspect.getsource(inspect.getmodule(factory))
            assert f"\ndef {name}(pretrained: bool = False, **kwargs)" in source


def test_variant_config_defaults_are_the_constructors():
    # One place for defaults: a config field left at its default equals the constructor's default.
    for family_name in replknet.list_families():
        family = replknet.get_model_info(replknet.list_models(family=family_name)[0]).family
        signature = inspect.signature(family.model_cls.__init__).parameters
        config_cls = type(next(iter(family.configs.values())))
        for field_name, field in config_cls.__dataclass_fields__.items():
            if field.default is not inspect.Parameter.empty and not callable(field.default):
                if field.default.__class__.__name__ != "_MISSING_TYPE":
                    assert field.default == signature[field_name].default, (family_name, field_name)


def test_info_records_what_a_model_can_do():
    info = replknet.get_model_info("replknet_31b.in1k_384")
    assert info.name == "replknet_31b" and info.family.name == "replknet"
    assert info.fusible and info.family.deploy_arg == "small_kernel_merged"
    assert info.feature_strides == (4, 8, 16, 32)
    assert info.input_size == (3, 224, 224)
    assert info.pretrained_cfg("in1k_384")["input_size"] == (3, 384, 384)
    assert "in1k_384" in info.tags()
    assert info.preprocessing["crop_pct"] == 0.875 and info.preprocessing["interpolation"] == "bicubic"
    assert replknet.get_model_info("replknet_xl").pretrained_cfg("meg73m_ft_in1k_320")["mean"] == (0.5, 0.5, 0.5)
    mbv2 = replknet.get_model_info("mbv2_lk_k13_rep3")
    assert mbv2.family.name == "mobilenetv2" and mbv2.fusible and mbv2.feature_strides == (2, 4, 8, 16, 32)
    assert replknet.find_model_info("resnet50") is None
    assert set(replknet.list_models(fusible=True)) == set(replknet.list_models())


@pytest.mark.parametrize("name", ["replknet_tiny", "mbv2_lk_k7"])
def test_feature_strides_match_the_model(name):
    model = replknet.create_model(name, features_only=True)
    assert tuple(model.feature_info.reduction()) == replknet.get_model_info(name).feature_strides


def test_unknown_names_suggest_close_ones():
    with pytest.raises(replknet.UnknownModelError, match=r"did you mean 'replknet_31b'"):
        replknet.create_model("replknet_31bb")
    with pytest.raises(ValueError, match="did you mean .*'mbv2_lk_k13'"):
        replknet.get_model_info("mbv2_lk_k31")
    with pytest.raises(ValueError, match="is a timm model, not one of replknet's"):
        replknet.get_model_info("resnet50")
    with pytest.raises(ValueError, match="unknown model family 'resnet'"):
        replknet.list_models(family="resnet")


def test_a_factory_for_an_unlisted_variant_is_refused():
    family = replknet.get_model_info("replknet_tiny").family
    with pytest.raises(ValueError, match="not a variant of the replknet family"):

        @_registry.register_model(family)
        def replknet_not_in_the_table(pretrained: bool = False, **kwargs):  # pragma: no cover
            raise AssertionError


def test_bench_measures_the_fused_form_of_every_fusible_family():
    # It used to measure only RepLKNet's fused forms: MobileNetV2 study models fuse too.
    fused = build_bench_model("mbv2_lk_k7_rep3", "fused", image_size=64)
    assert fused is not None
    assert replknet.get_model_info("mbv2_lk_k7_rep3").family.is_deploy_state_dict(fused.state_dict())
    assert build_bench_model("resnet18", "fused", image_size=64) is None


def test_deploy_checkpoint_of_any_fusible_family_builds_the_fused_model(tmp_path):
    model = replknet.create_model("mbv2_lk_k7_rep3", num_classes=5).eval()
    fused = replknet.reparameterize(model)
    path = replknet.save_state_dict(fused.state_dict(), tmp_path / "fused.safetensors")
    loaded = replknet.create_model("mbv2_lk_k7_rep3", checkpoint_path=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), fused(x))
