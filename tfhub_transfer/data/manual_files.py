"""What this package's TFDS builders read from the TFDS manual dir, as plain constants.

TF-free, so the dataset registry can tell a user what to download without importing TFDS.
"""

# Birdsnap v1.1: the official lists, and the folder the official get_birdsnap.py fills.
BIRDSNAP_LIST_FILES = ("images.txt", "species.txt", "test_images.txt")
BIRDSNAP_IMAGES_DIR = "images"
