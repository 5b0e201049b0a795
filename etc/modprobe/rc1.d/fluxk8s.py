# rc1 hook for flux modprobe: load fluxk8s (see ../modprobe.d/fluxk8s.toml for where
# and when). rc3 unloads every module modprobe loaded, so no rc3 hook is needed.


def setup(context):
    context.load_modules(["fluxk8s"])
