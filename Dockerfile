# hbf's container image: the static binary and nothing else.
#
# `make image` builds the binary (CGO_ENABLED=0) into build/image/ first:
# the image needs no Go toolchain and no registry, only scratch. Run it with
# the host's network, the bpffs and a state volume (deploy/compose.yaml):
#   podman run --network host --cap-drop all --cap-add BPF,NET_ADMIN,PERFMON \
#     -v /sys/fs/bpf:/sys/fs/bpf -v hbf-state:/var/lib/hbf hbf:latest daemon --iface eth0
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="hbf" \
      org.opencontainers.image.description="host-based firewall on eBPF/XDP" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/hbf-firewall/hbf"
# CA certificates for --blocklist-url feeds over HTTPS.
COPY build/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY build/image/hbf /usr/bin/hbf
# The daemon's socket lives in /run/hbf; `hbf block …` through
# `<engine> exec` reaches it.
VOLUME ["/var/lib/hbf"]
EXPOSE 9717
ENTRYPOINT ["/usr/bin/hbf"]
CMD ["daemon"]
