/*
 * Incremental gRPC length-prefixed frame parser and the gRPC-Web trailer block encoder.
 */
#include "portico/codec.h"

void ptc_frame_parser_init(ptc_frame_parser_t *p)
{
    memset(p, 0, sizeof(*p));
}

bool ptc_frame_parser_at_boundary(const ptc_frame_parser_t *p)
{
    return p->_hdr_len == 0 && p->_remaining == 0;
}

int ptc_frame_parser_feed(ptc_frame_parser_t *p, const uint8_t *data, size_t len, ptc_frame_cb cb, void *ctx)
{
    int ret;

    if (p->_failed)
        return PTC_EPROTO;
    while (len > 0) {
        if (p->_remaining == 0) {
            /* collecting a header; _hdr_len < 5 holds here because a complete header is consumed below */
            size_t take = PTC_MIN((size_t)(PTC_FRAME_HEADER_SIZE - p->_hdr_len), len);
            memcpy(p->_hdr + p->_hdr_len, data, take);
            p->_hdr_len = (uint8_t)(p->_hdr_len + take);
            data += take;
            len -= take;
            if (p->_hdr_len < PTC_FRAME_HEADER_SIZE)
                break;
            p->_hdr_len = 0;
            p->flags = p->_hdr[0];
            p->length = (uint32_t)p->_hdr[1] << 24 | (uint32_t)p->_hdr[2] << 16 | (uint32_t)p->_hdr[3] << 8 | p->_hdr[4];
            if ((ret = cb(ctx, PTC_FRAME_EV_HEADER, p->flags, p->length, NULL, 0)) != 0)
                goto fail;
            if (p->length == 0) {
                p->frames++;
                if ((ret = cb(ctx, PTC_FRAME_EV_END, p->flags, 0, NULL, 0)) != 0)
                    goto fail;
            } else {
                p->_remaining = p->length;
            }
            continue;
        }
        size_t take = PTC_MIN((size_t)p->_remaining, len);
        if ((ret = cb(ctx, PTC_FRAME_EV_DATA, p->flags, p->length, data, take)) != 0)
            goto fail;
        data += take;
        len -= take;
        p->_remaining -= (uint32_t)take;
        if (p->_remaining == 0) {
            p->frames++;
            if ((ret = cb(ctx, PTC_FRAME_EV_END, p->flags, p->length, NULL, 0)) != 0)
                goto fail;
        }
    }
    return 0;

fail:
    p->_failed = true;
    return ret;
}

void ptc_frame_header_encode(uint8_t out[PTC_FRAME_HEADER_SIZE], uint8_t flags, uint32_t length)
{
    out[0] = flags;
    out[1] = (uint8_t)(length >> 24);
    out[2] = (uint8_t)(length >> 16);
    out[3] = (uint8_t)(length >> 8);
    out[4] = (uint8_t)length;
}

size_t ptc_trailer_encoded_len(const ptc_header_t *fields, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += fields[i].name.len + 1 + fields[i].value.len + 2;
    return total;
}

size_t ptc_trailer_encode(uint8_t *dst, const ptc_header_t *fields, size_t n)
{
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++) {
        ptc_lower_copy((char *)p, fields[i].name.base, fields[i].name.len);
        p += fields[i].name.len;
        *p++ = ':';
        if (fields[i].value.len != 0) {
            memcpy(p, fields[i].value.base, fields[i].value.len);
            p += fields[i].value.len;
        }
        *p++ = '\r';
        *p++ = '\n';
    }
    return (size_t)(p - dst);
}
