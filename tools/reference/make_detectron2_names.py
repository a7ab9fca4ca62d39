"""make_detectron2_names.py: the parameter and buffer names of detectron2's ResNet-50 backbone
(`build_resnet_backbone`, MODEL.RESNETS.DEPTH 50, NORM "FrozenBN"), one per line, in the
order of its state_dict, without the "backbone.bottom_up." prefix that the FPN/C4 model adds.

detectron2 is not a Debian package, so the list is written from the module structure of
detectron2/modeling/backbone/resnet.py: a BasicStem with `conv1` (a detectron2 Conv2d whose
`norm` is a FrozenBatchNorm2d holding the buffers weight, bias, running_mean, running_var), and
stages res2..res5 of 3, 4, 6, 3 BottleneckBlocks, each registering `shortcut` (only when its
input and output channels differ: the first block of every stage), then conv1, conv2, conv3,
all without bias and each with its norm. This is the fixture `dsc export --format detectron2`
is checked against (tests/cli/test_export.sh).

usage: make_detectron2_names.py OUT.txt
"""
import sys

NORM = ["weight", "bias", "running_mean", "running_var"]


def conv_names(prefix):
    return [prefix + ".weight"] + [prefix + ".norm." + b for b in NORM]


def names():
    out = conv_names("stem.conv1")
    in_ch = 64
    for stage, blocks in enumerate([3, 4, 6, 3]):
        out_ch = 256 << stage
        for b in range(blocks):
            block = "res%d.%d" % (stage + 2, b)
            if in_ch != out_ch:
                out += conv_names(block + ".shortcut")
            for c in (1, 2, 3):
                out += conv_names("%s.conv%d" % (block, c))
            in_ch = out_ch
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(names()) + "\n")
