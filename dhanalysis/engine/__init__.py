"""Training, distributed set-up and COCO evaluation."""
