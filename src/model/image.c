/* image.c - the generated image as a PNG, with its parameters recorded in
 * the A1111 "parameters" text chunk so tools that read it (A1111, ComfyUI,
 * image viewers) show how it was made. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd.h"
#include "util/png.h"

/* The sampler names A1111 writes for our schedulers. */
static const char *a1111_sampler(enum sd_scheduler s, const sd_model *m)
{
    if (s == SD_SCHED_DEFAULT && m)
        s = sd_model_get_info(m)->default_scheduler;
    switch (s) {
    case SD_SCHED_PNDM: return "PLMS";
    case SD_SCHED_DDIM: return "DDIM";
    case SD_SCHED_EULER: return "Euler";
    case SD_SCHED_EULER_A: return "Euler a";
    case SD_SCHED_DPMPP_2M: return "DPM++ 2M";
    case SD_SCHED_DPMPP_2M_KARRAS: return "DPM++ 2M Karras";
    case SD_SCHED_LCM: return "LCM";
    default: return m ? sd_model_get_info(m)->scheduler_class : "default";
    }
}

char *sd_infotext(const struct sd_params *p, const sd_model *m, uint64_t seed, int width, int height)
{
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    size_t cap = strlen(p->prompt) + strlen(neg) + 512;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    int o = snprintf(text, cap, "%s\n", p->prompt);
    if (*neg)
        o += snprintf(text + o, cap - o, "Negative prompt: %s\n", neg);
    o += snprintf(text + o, cap - o, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d",
                  p->steps, a1111_sampler(p->scheduler, m),
                  (double)(p->guidance == SD_GUIDANCE_DEFAULT ? (m ? sd_model_get_info(m)->default_guidance : 7.5f)
                                                              : p->guidance),
                  (unsigned long long)seed, width, height);
    if (m)
        o += snprintf(text + o, cap - o, ", Model: %s", sd_model_get_info(m)->name);
    if (p->clip_skip) /* A1111 counts the last layer as 1: diffusers' k is A1111's k+1 */
        o += snprintf(text + o, cap - o, ", Clip skip: %d", p->clip_skip + 1);
    if (p->init_image)
        o += snprintf(text + o, cap - o, ", Denoising strength: %g",
                      (double)(p->strength > 0 ? p->strength : p->mask ? 1.0f : 0.8f));
    if (p->eta > 0)
        o += snprintf(text + o, cap - o, ", Eta: %g", (double)p->eta);
    snprintf(text + o, cap - o, ", Version: diffusiond");
    return text;
}

const char *sd_sampler_a1111_name(enum sd_scheduler s, const sd_model *m)
{
    return a1111_sampler(s, m);
}

int sd_image_png(const struct sd_image *img, const struct sd_params *p, const sd_model *m,
                 uint8_t **png, size_t *len, struct sd_err *err)
{
    char *text = sd_infotext(p, m, img->seed, img->width, img->height);
    if (!text)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    const char *kv[] = {"parameters", text, NULL};
    int rc = png_encode_rgb(img->rgb, img->width, img->height, kv, png, len, err);
    free(text);
    return rc;
}
