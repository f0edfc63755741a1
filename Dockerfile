# Image for the web server and the GPU workers (see docker-compose.yml).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml requirements.lock ./
RUN python3.11 -m venv /venv && /venv/bin/pip install --upgrade pip \
    && grep -v '^torch==' requirements.lock > /tmp/req.txt \
    && /venv/bin/pip install torch==2.13.0 -r /tmp/req.txt \
    && /venv/bin/pip install --no-deps anny==0.6.2 mediapipe==0.10.14 smplx==0.1.28 \
    && SAM2_BUILD_CUDA=0 /venv/bin/pip install --no-deps --no-build-isolation sam2==1.1.0 \
    && /venv/bin/pip install --no-deps dlr-moge==2.0.0 dlr-utils3d==1.3 dlr-pipeline==1.0.0 huggingface_hub==0.36.2
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY . .
