from setuptools import find_packages, setup

setup(
    name="resnest_dense",
    version="0.1.0",
    description="ResNeSt (Split-Attention) backbones, detectors and DeepLabV3 for Detectron2",
    packages=find_packages(include=["resnest_dense", "resnest_dense.*"]),
    package_data={"resnest_dense": ["data/*.json", "model_zoo/*.json", "model_zoo/configs/**/*.yaml", "model_zoo/configs/**/*.py"]},
    python_requires=">=3.10",
    install_requires=["torch", "torchvision", "fvcore", "iopath", "pycocotools", "tqdm"],
    extras_require={"test": ["pytest", "timm", "onnx"]},
)
