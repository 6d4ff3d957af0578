terraform {
  # optional() object attributes with defaults need 1.3; no providers at all:
  # this module only renders text, so it can be evaluated offline.
  required_version = ">= 1.3.0"
}
