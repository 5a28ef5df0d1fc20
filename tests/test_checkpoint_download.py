"""backbones.checkpoints.io.load_url_checkpoint, the loader of http(s) checkpoints (init_cfg,
mmengine's load_from): a timeout, the URL named in every error, and nothing cached that is not
a whole, readable checkpoint. Served from 127.0.0.1 by this test."""
import http.server
import io
import os
import socket
import threading
import time

import pytest
import torch

from backbones import EdgeViT
from backbones.checkpoints.io import CheckpointFileError, cached_download_path, load_url_checkpoint


def _checkpoint_bytes():
    buffer = io.BytesIO()
    torch.save({'state_dict': EdgeViT('xxs').state_dict()}, buffer)
    return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b''

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit('/', 1)[-1]
        if name == 'hang.pth':
            time.sleep(5)  # accepts, never answers within the client's timeout
            return
        if name == 'missing.pth':
            self.send_error(404, 'Not Found')
            return
        body = {'good.pth': self.body, 'page.pth': b'<html><body>Please log in</body></html>',
                'truncated.pth': self.body[:len(self.body) // 2]}[name]
        self.send_response(200)
        self.send_header('Content-Length', str(len(self.body) if name == 'truncated.pth' else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('EDGEFORMERS_DOWNLOAD_TIMEOUT', '1')
    _Handler.body = _checkpoint_bytes()
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def _cache(url):
    folder = os.path.dirname(cached_download_path(url))
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize('name,message', [
    ('hang.pth', 'no answer within 1 s'),
    ('missing.pth', 'HTTP 404'),
    ('page.pth', 'not a readable checkpoint'),
    ('truncated.pth', 'ended after'),
])
def test_a_failed_download_names_the_url_and_caches_nothing(server, name, message):
    url = f'{server}/weights/{name}'
    start = time.monotonic()
    with pytest.raises(CheckpointFileError) as err:
        load_url_checkpoint(url)
    assert str(err.value).startswith(url) and message in str(err.value), str(err.value)
    assert 'nothing was cached' in str(err.value)
    assert _cache(url) == []
    assert time.monotonic() - start < 60  # the timeout ends it (the server answers after 5 s, if ever)


def test_a_whole_download_is_cached_and_read_from_the_cache(server):
    url = f'{server}/weights/good.pth'
    first = load_url_checkpoint(url)
    assert _cache(url) == ['good.pth'] and set(first['state_dict']) == set(EdgeViT('xxs').state_dict())
    _Handler.body = b''  # the cache answers now
    again = load_url_checkpoint(url)
    assert all(torch.equal(first['state_dict'][k], again['state_dict'][k]) for k in first['state_dict'])


def test_init_cfg_and_mmengine_load_urls_through_it(server):
    from mmengine.runner.checkpoint import CheckpointLoader
    import backbones  # noqa: F401  (registers the loaders)
    model = EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=f'{server}/good.pth'))
    model.init_weights()
    with pytest.raises(CheckpointFileError, match='no answer within'):
        CheckpointLoader.load_checkpoint(f'{server}/hang.pth')
    with pytest.raises(CheckpointFileError, match=f'{server}/missing.pth'):
        EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=f'{server}/missing.pth')).init_weights()


def test_a_server_that_accepts_and_never_answers(tmp_path, monkeypatch):
    """A bare socket: the connection is accepted and no byte ever comes back."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    url = f'http://127.0.0.1:{listener.getsockname()[1]}/silent.pth'
    try:
        with pytest.raises(CheckpointFileError, match='no answer within 0.5 s'):
            load_url_checkpoint(url, timeout=0.5)
    finally:
        listener.close()
    assert _cache(url) == []
