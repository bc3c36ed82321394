/*
 * frame.c - the wire format of what a task sends its parent.
 *
 * Each frame is one SOCK_SEQPACKET datagram, so it arrives whole or not at
 * all: a child that dies in the middle of a send never leaves half a frame
 * behind, and frames of different sends never interleave.  A frame is a
 * 16-byte header followed by text:
 *
 *   offset 0  u32  magic "EGRP" (0x50524745 read as a little-endian u32)
 *          4  u8   version (1)
 *          5  u8   type: 1 = MESSAGE (errgroup_errorf), 2 = RETURNED
 *          6  u16  zero
 *          8  i32  code
 *         12  u32  text length; equals the datagram's length minus 16
 *
 * Integers are in the host's byte order: both ends are the same machine.
 * The decoder trusts nothing: a task may send garbage, so every field is
 * checked and the text is bounded, NUL-free and not NUL-terminated.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define FRAME_MAGIC 0x50524745u   /* "EGRP" on a little-endian machine */
#define FRAME_VERSION 1

size_t frame_encode_header(unsigned char *buf, enum frame_type type, int code, size_t text_len)
{
	uint32_t magic = FRAME_MAGIC, length = (uint32_t)text_len;
	int32_t code32 = code;

	memcpy(buf, &magic, 4);
	buf[4] = FRAME_VERSION;
	buf[5] = (unsigned char)type;
	buf[6] = 0;
	buf[7] = 0;
	memcpy(buf + 8, &code32, 4);
	memcpy(buf + 12, &length, 4);
	return FRAME_HEADER_SIZE;
}

/*
 * The length of a message that vsnprintf wrote into text, with room for
 * ERRGROUP_MESSAGE_MAX bytes and then the marker, once it has said it
 * printed printed bytes (or -1, errno err).  A text cut at the limit gets
 * the marker with the whole length.  When vsnprintf failed after it had
 * filled the text, the whole was longer than it: past INT_MAX, which
 * vsnprintf cannot count (EOVERFLOW), or longer than the limit, if a
 * later conversion failed (EILSEQ, say).  Such texts had no marker.
 */
size_t frame_message_length(char *text, int printed, int err)
{
	size_t len = strnlen(text, ERRGROUP_MESSAGE_MAX);
	int n;

	if (len < ERRGROUP_MESSAGE_MAX)
		return len;
	if (printed > ERRGROUP_MESSAGE_MAX)
		n = snprintf(text + len, FRAME_TRUNCATION_MARKER_MAX,
			     "[... message truncated: %d bytes]", printed);
	else if (printed < 0)
		n = snprintf(text + len, FRAME_TRUNCATION_MARKER_MAX,
			     "[... message truncated: more than %d bytes]",
			     err == EOVERFLOW ? INT_MAX : ERRGROUP_MESSAGE_MAX);
	else
		return len;
	return len + (size_t)n;
}

/*
 * Decodes one datagram of len bytes.  Returns 0 and fills ret (whose text
 * points into buf), or -EBADMSG when the datagram is not a frame this
 * version wrote.
 */
int frame_decode(const unsigned char *buf, size_t len, struct frame *ret)
{
	uint32_t magic, text_len;
	int32_t code;

	if (len < FRAME_HEADER_SIZE || len > FRAME_MAX)
		return -EBADMSG;
	memcpy(&magic, buf, 4);
	memcpy(&code, buf + 8, 4);
	memcpy(&text_len, buf + 12, 4);
	if (magic != FRAME_MAGIC || buf[4] != FRAME_VERSION || buf[6] || buf[7])
		return -EBADMSG;
	if (text_len != len - FRAME_HEADER_SIZE)
		return -EBADMSG;
	if (memchr(buf + FRAME_HEADER_SIZE, '\0', text_len))
		return -EBADMSG;
	switch (buf[5]) {
	case FRAME_MESSAGE:
		break;
	case FRAME_RETURNED:
		if (text_len != 0)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	ret->type = buf[5];
	ret->code = code;
	ret->text = (const char *)buf + FRAME_HEADER_SIZE;
	ret->text_len = text_len;
	return 0;
}
