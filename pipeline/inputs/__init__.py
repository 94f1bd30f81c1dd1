"""What comes in: the inbox and its folders, the validation of photos, image formats, and
the one safe way to open a file of the inbox."""
