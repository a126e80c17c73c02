# One image for the operator, the in-pod agent (`scheduledbot-agent`) and the demo bot
# (`python -m scheduledbot.demo_bot`, the operator's default bot template), so that a
# release is one tag and the default template always matches the operator.
#
# tools/ci-wheel-check.sh runs the same build and install steps without Docker.

# Both stages must use the same interpreter: the virtualenv's python is a link to it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .
# Only the wheel's own dependencies, each at the version pinned in constraints.txt
# (which also holds test and bench tools that must not ship). Binary wheels only:
# there is no compiler here, and none should be needed.
# pip writes the bytecode here, once: the root filesystem is read-only at run time.
RUN python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --no-cache-dir --only-binary=:all: \
      -c constraints.txt /dist/*.whl

FROM ${PYTHON_IMAGE}
# Nothing in the running image can fetch or build code.
RUN python -m pip uninstall --yes pip setuptools wheel
# The user needs a name: kopf asks for it (getpass.getuser()), which fails for a uid
# without a passwd entry.
RUN groupadd --gid 10001 scheduledbot \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin scheduledbot
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so that the kubelet can enforce runAsNonRoot without a passwd lookup.
USER 10001:10001
ENTRYPOINT ["scheduledbot-operator"]
