# Installing Debian packages for the tool-* targets: each target tests for its
# tool first and runs this only when it is missing. As root, or with sudo.
#   $(call APT_INSTALL,<apt-get install arguments>)
APT_INSTALL = sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
  $$sudo apt-get update -q; \
  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1)
