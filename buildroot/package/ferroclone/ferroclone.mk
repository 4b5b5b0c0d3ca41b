################################################################################
#
# ferroclone
#
################################################################################

# Kept equal to Cargo.toml's version (tests/e2e.rs checks it).
FERROCLONE_VERSION = 0.1.0
FERROCLONE_SITE = $(BR2_EXTERNAL_FERROCLONE_PATH)/..
FERROCLONE_SITE_METHOD = local
FERROCLONE_LICENSE = MIT or Apache-2.0
FERROCLONE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude target --exclude dist --exclude fuzz --exclude buildroot/output

# cargo-package vendors the crates in its download post-process, which a local package does
# not have: fetch them into Buildroot's cargo home after the rsync instead, so the
# infrastructure's offline, locked build finds them.
define FERROCLONE_CARGO_FETCH
	cd $(@D) && $(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) cargo fetch --locked
endef
FERROCLONE_POST_RSYNC_HOOKS += FERROCLONE_CARGO_FETCH

$(eval $(cargo-package))
