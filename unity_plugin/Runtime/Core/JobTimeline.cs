// The filled frames of a job as its motion events arrive: a later chunk over the same frames replaces an
// earlier one (the provisional SLERP draft first, final frames as they settle).
using System;

namespace AnyMoLe.Core
{
    public sealed class JobTimeline
    {
        public int ContextFrames { get; private set; }
        public int TotalFrames { get; private set; }
        public int JointCount { get; private set; }
        readonly float[] rotations, roots;
        float[] translations;
        readonly bool[] received, final;

        public JobTimeline(int contextFrames, int totalFrames, int joints)
        {
            ContextFrames = contextFrames;
            TotalFrames = totalFrames;
            JointCount = joints;
            int n = Math.Max(0, totalFrames - contextFrames);
            rotations = new float[n * joints * 4];
            roots = new float[n * 3];
            received = new bool[n];
            final = new bool[n];
        }

        /// <summary>Frames received so far, and how many of them are final.</summary>
        public int Received { get { return Array.FindAll(received, b => b).Length; } }
        public int Final { get { return Array.FindAll(final, b => b).Length; } }
        public bool Complete { get { return Final == received.Length; } }

        public void Add(MotionEvent m)
        {
            int j = JointCount, first = m.FrameStart - ContextFrames;
            if (first < 0 || first + m.FrameCount > received.Length || m.Rotations.Length != m.FrameCount * j * 4 ||
                (m.JointCount != 0 && m.JointCount != j))
                throw new AnyMoLeRpcException(RpcCode.DataLoss, "motion frames " + m.FrameStart + ".." +
                    (m.FrameStart + m.FrameCount - 1) + " do not fit the job's timeline of " + TotalFrames +
                    " frames and " + j + " joints; update the plugin or the server", "");
            Array.Copy(m.Rotations, 0, rotations, first * j * 4, m.FrameCount * j * 4);
            Array.Copy(m.RootTranslations, 0, roots, first * 3, m.FrameCount * 3);
            if (m.Translations != null)
            {
                if (translations == null) translations = new float[received.Length * j * 3];
                Array.Copy(m.Translations, 0, translations, first * j * 3, m.FrameCount * j * 3);
            }
            for (int f = first; f < first + m.FrameCount; f++)
            {
                received[f] = true;
                final[f] = m.IsFinal;
            }
        }

        /// <summary>The context followed by the filled frames: the whole result timeline.</summary>
        public Motion Assemble(Motion context)
        {
            int j = JointCount, c = ContextFrames, n = received.Length;
            var m = new Motion { Fps = context.Fps, FrameCount = c + n, JointCount = j };
            m.Rotations = Concat(context.Rotations, c * j * 4, rotations);
            m.RootTranslations = Concat(context.RootTranslations, c * 3, roots);
            if (context.Translations != null && translations != null)
                m.Translations = Concat(context.Translations, c * j * 3, translations);
            return m;
        }

        static float[] Concat(float[] a, int count, float[] b)
        {
            var r = new float[count + b.Length];
            Array.Copy(a, 0, r, 0, count);
            Array.Copy(b, 0, r, count, b.Length);
            return r;
        }
    }
}
