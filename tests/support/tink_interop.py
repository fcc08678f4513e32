"""Tink's own streaming AEAD, keyed the way an app imports a modelmake data key."""
from __future__ import annotations

import io

import pytest


def tink_streaming_aead(raw_key: bytes):
    """Tink's AES256_GCM_HKDF_1MB primitive for a raw 32-byte key (skips the test when Tink is not installed)."""
    tink = pytest.importorskip("tink")
    from tink import secret_key_access
    from tink import streaming_aead as tink_streaming
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

    tink_streaming.register()
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=2**20, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256
    )
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, key_value=raw_key, params=params)
    # The key built by hand must be exactly the predefined template's parameters.
    template = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKeyFormat.FromString(
        tink_streaming.streaming_aead_key_templates.AES256_GCM_HKDF_1MB.value
    )
    assert template.params == params and template.key_size == len(raw_key)
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(tink_streaming.StreamingAead)


def tink_encrypt(aead, plaintext: bytes, associated_data: bytes) -> bytes:
    class Keep(io.BytesIO):
        """Tink closes the stream it writes to: keep the bytes it held."""

        kept = b""

        def close(self) -> None:
            self.kept = self.getvalue()
            super().close()

    out = Keep()
    with aead.new_encrypting_stream(out, associated_data) as stream:
        stream.write(plaintext)
    return out.kept


def tink_decrypt(aead, ciphertext: bytes, associated_data: bytes) -> bytes:
    with aead.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as stream:
        return stream.read()
