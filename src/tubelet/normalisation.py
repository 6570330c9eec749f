"""Pixel normalisation constants shared by the data pipeline and the models' metadata, kept below
both so that neither imports the other."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, of x / 255
IMAGENET_STD = (0.229, 0.224, 0.225)
