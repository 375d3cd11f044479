/* json_dump.h - JSON text as FastAPI writes it.
 *
 * Python's json.dumps with separators (",", ":") and ensure_ascii=False:
 * compact, UTF-8 as is, floats in repr form (0.1, 50.0, 1e+300) where
 * jansson's own dumper prints 17 significant digits. Every JSON body the
 * service sends goes through here, so all API families look alike.
 */
#ifndef SD_SERVER_JSON_DUMP_H
#define SD_SERVER_JSON_DUMP_H

#include <jansson.h>
#include <stddef.h>

/* malloc'd text; NULL when out of memory. *len (may be NULL) gets its length. */
char *json_api_dumps(const json_t *v, size_t *len);

#endif
